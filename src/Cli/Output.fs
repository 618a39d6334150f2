/// Console conventions shared by the commands: results on stdout, progress and errors on stderr.
module MagnetWhisper.Cli.Output

open System
open TorchSharp

/// Writes an error line to stderr.
let error (message: string) = eprintfn "magnet: %s" message

/// Writes a progress line to stderr unless quiet.
let progress (quiet: bool) (message: string) = if not quiet then eprintfn "%s" message

/// Formats a duration in milliseconds with three significant digits.
let ms (seconds: float) = sprintf "%.3g ms" (seconds * 1000.0)

/// Parses a dtype name: float32 (fp32, f32), float16 (fp16, f16, half), bfloat16 (bf16) or float64 (fp64, double).
let parseDtype (name: string) : torch.ScalarType =
    match name.Trim().ToLowerInvariant() with
    | "float32" | "fp32" | "f32" -> torch.float32
    | "float16" | "fp16" | "f16" | "half" -> torch.float16
    | "bfloat16" | "bf16" -> torch.bfloat16
    | "float64" | "fp64" | "f64" | "double" -> torch.float64
    | other -> invalidArg "dtype" $"unknown dtype '{other}': use float32, float16, bfloat16 or float64"

/// The machine's warm matrix-multiply rate in GFLOP/s (median of `repeats` n×n×n products in dtype on device),
/// the ceiling against which compute-bound benchmarks are judged.
let matmulRate (device: torch.Device) (dtype: torch.ScalarType) (n: int64) (repeats: int) : float =
    use _ = torch.inference_mode()
    use a = torch.randn([| n; n |], dtype = dtype, device = device)
    use b = torch.randn([| n; n |], dtype = dtype, device = device)
    let once () =
        let watch = Diagnostics.Stopwatch.StartNew()
        use c = a.matmul b
        if device.``type`` = DeviceType.CUDA then torch.cuda.synchronize ()
        watch.Elapsed.TotalSeconds
    once () |> ignore
    let seconds = Array.init repeats (fun _ -> once ())
    2.0 * float n * float n * float n / MagnetWhisper.Core.Statistics.median seconds / 1e9
