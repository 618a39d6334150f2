/// `magnet bench ...`: speed measurements (never timed tests).
module MagnetWhisper.Cli.Commands.Bench

open Argu

type BenchArgs =
    | [<Hidden>] Placeholder
    interface IArgParserTemplate with
        member _.Usage = ""

let run (_: ParseResults<BenchArgs>) : int = 0
