/// `magnet features AUDIO -o out.npy`: Whisper's log-mel features (and frame mask) as .npy, to compare with Python.
module MagnetWhisper.Cli.Commands.Features

open System.IO
open Argu
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio

type FeaturesArgs =
    | [<MainCommand; ExactlyOnce>] Audio of audio: string
    | [<AltCommandLine("-o"); ExactlyOnce>] Output of path: string
    | Mask of path: string
    | Mels of count: int
    | Device of name: string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Audio _ -> "audio file (WAV or FLAC natively; other formats need ffmpeg)."
            | Output _ -> "write the features (n_mels, 3000) float32 to this .npy file."
            | Mask _ -> "also write the frame mask (3000,) float32 (1 = inside the audio) to this .npy file."
            | Mels _ -> "mel bins: 80 (default; Whisper v1/v2) or 128 (v3)."
            | Device _ -> "auto (default), cpu, cuda or cuda:N."

let run (args: ParseResults<FeaturesArgs>) : int =
    let audioPath = args.GetResult Audio
    let output = args.GetResult Output
    let nMels = args.GetResult(Mels, defaultValue = LogMel.DefaultMels)
    if nMels <> 80 && nMels <> 128 then invalidArg "mels" $"--mels must be 80 or 128, got {nMels}"
    let device = Device.parse (args.GetResult(Device, defaultValue = "auto"))
    try
        let audio = Audio.load audioPath
        let seconds = float audio.Length / float LogMel.SampleRate
        if audio.Length > LogMel.NSamples then
            MagnetWhisper.Cli.Output.progress false $"{audioPath}: {seconds:F2} s long; the features cover the first {LogMel.ChunkSeconds} s"
        use features = LogMel.extract nMels device [ audio ]
        use mel = features.Mel.[0]
        use mask = features.Mask.[0]
        Npy.write output mel
        args.TryGetResult Mask |> Option.iter (fun path -> Npy.write path mask)
        let valid = int (Tensors.toFloat (mask.sum()))
        printfn "%s: (%d, %d) float32 log-mel of %s (%.2f s); %d of %d frames valid" output nMels LogMel.NFrames audioPath seconds valid LogMel.NFrames
        0
    with
    | :? InvalidDataException
    | :? System.NotSupportedException
    | :? IOException
    | :? System.UnauthorizedAccessException as e ->
        MagnetWhisper.Cli.Output.error e.Message
        1
