/// `magnet demo`: the built-in default job.
module MagnetWhisper.Cli.Commands.Demo

open Argu

type DemoArgs =
    | Seed of int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Seed _ -> "random seed (default 0)."

let run (_: ParseResults<DemoArgs>) : int = 0
