namespace MagnetWhisper.Core.Training

// The auxiliary CTC loss of hybrid CTC/attention training (Watanabe et al. 2017): a linear head on the final encoder
// states predicts characters of a fixed alphabet, and CTC aligns them to the transcript without any alignment. The
// monotonic CTC objective gives the encoder a direct signal about what it hears, which attention-only training from
// random weights lacks for a long time (issue 11 §3). The head lives in MagnetWhisperModel (`ctc_head.*`, see
// docs/DECISIONS.md); this file holds the alphabet, the targets and the loss.

open System
open TorchSharp

/// The CTC head's classes: blank (0), space, a–z, apostrophe, 0–9.
[<RequireQualifiedAccess>]
module CtcAlphabet =
    /// The characters of classes 1.. (class 0 is the blank).
    let characters: string = " abcdefghijklmnopqrstuvwxyz'0123456789"

    /// The class of the blank.
    [<Literal>]
    let Blank = 0

    /// Classes including the blank (39).
    let classes = characters.Length + 1

    /// The character targets of a transcript: lower-cased, every whitespace a space, characters outside the alphabet
    /// dropped, runs of spaces made one and the ends trimmed (a space separates words; more say nothing).
    let encode (transcript: string) : int[] =
        let kept =
            transcript.ToLowerInvariant()
            |> Seq.map (fun c -> if Char.IsWhiteSpace c then ' ' else c)
            |> Seq.filter (fun c -> characters.IndexOf c >= 0)
            |> Array.ofSeq
        let text = String.Join(" ", (String kept).Split(' ', StringSplitOptions.RemoveEmptyEntries))
        text |> Seq.map (fun c -> characters.IndexOf c + 1) |> Array.ofSeq

/// The CTC loss.
[<RequireQualifiedAccess>]
module Ctc =
    /// Each utterance's CTC loss −log p(target | input): logits (B, S, C) over the classes (blank 0), valid input
    /// lengths (B) (positions after them are ignored), targets one array of classes per row. Computed in float32 (or
    /// float64 for float64 logits); an impossible alignment (target longer than the input allows) gives 0 and no
    /// gradient (zero_infinity) instead of +∞. Returns (B).
    let perUtterance (logits: torch.Tensor) (lengths: int64[]) (targets: int[][]) : torch.Tensor =
        let rows = int logits.shape.[0]
        if lengths.Length <> rows || targets.Length <> rows then
            invalidArg (nameof targets) $"{rows} rows of logits but {lengths.Length} lengths and {targets.Length} targets"
        let dtype = if logits.dtype = torch.float64 then torch.float64 else torch.float32
        let device = logits.device
        let logProbs = torch.nn.functional.log_softmax(logits.to_type(dtype), 2L).transpose(0L, 1L) // (S, B, C)
        let flat = targets |> Array.concat |> Array.map int64
        let targetTensor = torch.tensor(flat, dtype = torch.int64, device = device)
        let inputLengths = torch.tensor(lengths, dtype = torch.int64, device = device)
        let targetLengths = torch.tensor(targets |> Array.map (fun t -> int64 t.Length), dtype = torch.int64, device = device)
        torch.nn.functional.ctc_loss(logProbs, targetTensor, inputLengths, targetLengths, int64 CtcAlphabet.Blank,
                                     zero_infinity = true, reduction = torch.nn.Reduction.None)
