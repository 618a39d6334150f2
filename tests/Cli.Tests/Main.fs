module MagnetWhisper.Cli.Tests.Main

open Expecto

/// Runs every [<Tests>] value of this assembly, one at a time: each test runs the command line as a process on a
/// CPU shared with the other tests.
[<EntryPoint>]
let main argv =
    Tests.runTestsInAssemblyWithCLIArgs [ CLIArguments.Sequenced ] argv
