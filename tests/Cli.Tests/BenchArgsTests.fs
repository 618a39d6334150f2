/// `magnet bench <subcommand>`: unknown and misspelt flags are usage errors (2) that name the flag as typed and
/// suggest the nearest one, as for every other command, before anything is measured.
module MagnetWhisper.Cli.Tests.BenchArgsTests

open Expecto
open MagnetWhisper.Cli.Tests.Harness

[<Tests>]
let tests =
    testList "cli bench" [
        for sub, typed, meant in [ "encoder", "--confg", "--config"; "downsample", "--batchh", "--batch"; "transcribe", "--repeat", "--repeats" ] do
            test $"bench {sub} {typed} is an unknown option with a suggestion (exit 2)" {
                let r = magnet [ "bench"; sub; typed; "2" ]
                Expect.equal r.Code 2 (string r)
                Expect.stringContains r.Err $"unknown option '{typed}' (did you mean {meant}?); see 'magnet bench {sub} --help'" (string r)
                Expect.equal r.Out "" "nothing was measured"
            }
    ]
