/// Console conventions shared by the commands: results on stdout, progress and errors on stderr.
module MagnetWhisper.Cli.Output

open System

/// Writes an error line to stderr.
let error (message: string) = eprintfn "magnet: %s" message

/// Writes a progress line to stderr unless quiet.
let progress (quiet: bool) (message: string) = if not quiet then eprintfn "%s" message

/// Formats a duration in milliseconds with three significant digits.
let ms (seconds: float) = sprintf "%.3g ms" (seconds * 1000.0)
