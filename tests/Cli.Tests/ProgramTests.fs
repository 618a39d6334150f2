/// The top level of the command line: --version, a missing command, and Argu's own errors in the exit-code scheme
/// (0 success, 1 some inputs failed, 2 usage error).
module MagnetWhisper.Cli.Tests.ProgramTests

open System.IO
open System.Text.RegularExpressions
open Expecto
open MagnetWhisper.Cli.Tests.Harness

/// The <Version> of Directory.Build.props (the version every assembly is stamped with).
let private projectVersion () =
    let props = File.ReadAllText(Path.Combine(root, "Directory.Build.props"))
    Regex.Match(props, "<Version>([^<]+)</Version>").Groups.[1].Value

[<Tests>]
let tests =
    testList "cli program" [
        test "--version prints the project's version on stdout and exits 0" {
            let r = magnet [ "--version" ]
            Expect.equal r.Code 0 (string r)
            Expect.stringStarts r.Out $"magnet {projectVersion ()} " (string r)
            Expect.equal r.Err "" "nothing on stderr"
        }

        test "-V is --version" {
            let r = magnet [ "-V" ]
            Expect.equal r.Code 0 (string r)
            Expect.stringStarts r.Out $"magnet {projectVersion ()} " (string r)
        }

        test "no command is a usage error (2) with the usage on stderr" {
            let r = magnet []
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "USAGE: magnet" (string r)
        }

        test "--help prints the usage on stdout and exits 0" {
            let r = magnet [ "transcribe"; "--help" ]
            Expect.equal r.Code 0 (string r)
            Expect.stringContains r.Out "--output-dir" (string r)
        }

        test "an unknown command-level flag is a usage error (2)" {
            let r = magnet [ "--fp16" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--fp16" (string r)
        }

        test "an unknown flag before inspect's folder is named, not the folder (exit 2)" {
            let r = magnet [ "inspect"; "--fp16"; "somewhere" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "unknown option '--fp16'" (string r)
            Expect.isFalse (r.Err.Contains "'somewhere'") (string r)
        }

        test "a misspelt flag of another command gets a suggestion (exit 2)" {
            let r = magnet [ "inspect"; "somewhere"; "--audoi"; "x.wav" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "unknown option '--audoi' (did you mean --audio?)" (string r)
        }

        test "a flag value Argu cannot parse is a usage error (2) naming the flag" {
            let r = magnet [ "transcribe"; "a.wav"; "--model"; "m"; "--beam-size"; "abc" ]
            Expect.equal r.Code 2 (string r)
            Expect.stringContains r.Err "--beam-size" (string r)
        }
    ]
