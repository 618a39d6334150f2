module MagnetWhisper.Tests.Main

open Expecto

/// Runs every [<Tests>] value of this assembly. Sequenced: TorchSharp's RNG and dispose scopes are per process/thread.
[<EntryPoint>]
let main argv =
    Tests.runTestsInAssemblyWithCLIArgs [ CLIArguments.Sequenced ] argv
