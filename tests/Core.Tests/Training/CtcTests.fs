/// The auxiliary CTC loss: the loss against the CTC forward algorithm written out here (float64, log space), the
/// character targets of transcripts, w = 0 giving exactly the loss without CTC, the weighted combination, gradients
/// reaching the head and the encoder (and with w = 1 not the decoder), and the head's place in saved folders.
module MagnetWhisper.Tests.Training.CtcTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Segments
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Training
open MagnetWhisper.Tests.Magnet
open MagnetWhisper.Tests.Training.TrainingFixtures

/// −log p(target | log-probabilities lp (T × C)) by the CTC forward algorithm over the blank-extended target.
let private forwardAlgorithm (lp: float[,]) (steps: int) (target: int[]) : float =
    let ext = [| yield 0; for c in target do yield c; yield 0 |]
    let s = ext.Length
    let logAdd (a: float) (b: float) =
        if Double.IsNegativeInfinity a then b elif Double.IsNegativeInfinity b then a
        else max a b + log (1.0 + exp (-(abs (a - b))))
    let mutable alpha = Array.create s Double.NegativeInfinity
    alpha.[0] <- lp.[0, ext.[0]]
    if s > 1 then alpha.[1] <- lp.[0, ext.[1]]
    for t in 1 .. steps - 1 do
        alpha <-
            Array.init s (fun i ->
                let mutable a = alpha.[i]
                if i >= 1 then a <- logAdd a alpha.[i - 1]
                if i >= 2 && ext.[i] <> 0 && ext.[i] <> ext.[i - 2] then a <- logAdd a alpha.[i - 2]
                a + lp.[t, ext.[i]])
    -(if s > 1 then logAdd alpha.[s - 1] alpha.[s - 2] else alpha.[s - 1])

let private grads (m: MagnetWhisperModel) =
    [ for struct (n, p) in m.named_parameters() do
          if not (isNull p.grad) then n, p.grad.detach().abs().sum().item<float32>() |> float ]

[<Tests>]
let tests =
    testSequenced <| testList "training.ctc" [
        test "the loss equals the forward algorithm written out here (float64, two rows, padding ignored, a repeat)" {
            use _ = torch.NewDisposeScope()
            torch.manual_seed 3L |> ignore
            let logits = torch.randn([| 2L; 7L; 4L |], dtype = torch.float64) * 2.0
            let lengths = [| 7L; 4L |]
            let targets = [| [| 1; 2; 2 |]; [| 3 |] |]
            let losses = Tensors.toFloatArray (Ctc.perUtterance logits lengths targets)
            let lp = torch.nn.functional.log_softmax(logits, 2L)
            for row in 0 .. 1 do
                let table = Array2D.init 7 4 (fun t c -> lp.[int64 row, int64 t, int64 c].item<float>())
                let expected = forwardAlgorithm table (int lengths.[row]) targets.[row]
                Expect.floatClose { absolute = 1e-10; relative = 1e-10 } losses.[row] expected $"row {row}"
            // A target that cannot fit (3 classes with a repeat need 4 steps, the row has 2): 0, not +∞.
            let impossible = Tensors.toFloatArray (Ctc.perUtterance logits [| 2L; 4L |] targets)
            Expect.equal impossible.[0] 0.0 "zero_infinity"
        }

        test "character targets: lower-cased, whitespace one space, characters outside the alphabet dropped" {
            Expect.equal CtcAlphabet.classes 39 "blank, space, 26 letters, apostrophe, 10 digits"
            let expectedText = "hello world it's 5 o'clock now"
            let alphabet = " abcdefghijklmnopqrstuvwxyz'0123456789"
            let expected = expectedText |> Seq.map (fun c -> alphabet.IndexOf c + 1) |> Array.ofSeq
            Expect.equal (CtcAlphabet.encode "  Hello,  World!\tIt's 5 O'Clock — NOW.\n") expected "classes"
            Expect.equal (CtcAlphabet.encode "a z ' 0 9") [| 2; 1; 27; 1; 28; 1; 29; 1; 38 |] "a = 2, z = 27, ' = 28, 0 = 29, 9 = 38"
            Expect.isEmpty (CtcAlphabet.encode "¿¡ — !") "nothing left"
        }

        test "w = 0 is exactly the loss and gradients without CTC; w = 0.4 adds 0.4·(CTC − CE); w = 1 trains head and encoder, not the decoder" {
            let data = batch 5L MagnetFixtures.config 4
            let targets = [| [| 2; 3 |]; [| 4 |]; [| 5; 1; 6 |]; [||] |]
            let run (w: float option) =
                use m = model 11L MagnetFixtures.config
                torch.manual_seed 1L |> ignore
                m.AttachCtcHead CtcAlphabet.classes
                m.SetTrainable [ AllParameters ] |> ignore
                use g = Boundaries.generator 1L torch.CPU
                let loss b =
                    match w with
                    | None -> LossSums.magnetObserved ignore m (replayInput g b)
                    | Some w -> LossSums.magnetCtc ignore m (replayInput g b) w targets
                let result = TrainingStep.accumulateWithCtc [ data ] counts loss
                result, grads m
            match run None, run (Some 0.0), run (Some 0.4), run (Some 1.0) with
            | (Ok(l0, ce0, b0, ctc0, _), g0), (Ok(lz, cez, bz, ctcz, _), gz), (Ok(l4, ce4, b4, ctc4, _), _), (Ok(_, _, _, ctc1, _), g1) ->
                Expect.equal (lz, cez, bz) (l0, ce0, b0) "w = 0: the same loss, bit for bit"
                Expect.isTrue (Double.IsNaN ctc0 && Double.IsNaN ctcz) "no CTC value when off"
                Expect.equal gz g0 "w = 0: the same gradients"
                Expect.isFalse (g0 |> List.exists (fun (n, _) -> n.StartsWith "ctc_head.")) "w = 0: no gradient reaches the head"
                Expect.equal (ce4, b4) (ce0, b0) "CE and boundary terms unchanged"
                Expect.isGreaterThan ctc4 0.0 "a CTC loss"
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } l4 (0.6 * ce4 + 0.4 * ctc4 + b4) "(1 − w)·CE + w·CTC + boundary"
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } ctc1 ctc4 "the CTC value does not depend on w"
                // The value is each utterance's CTC loss per character (an empty target counts as one), averaged.
                let perCharacter =
                    use m = model 11L MagnetFixtures.config
                    torch.manual_seed 1L |> ignore
                    m.AttachCtcHead CtcAlphabet.classes
                    use g = Boundaries.generator 1L torch.CPU
                    use result = m.Forward(replayInput g data)
                    use logits = m.CtcHead.Value.forward result.Encoder.Hidden
                    let lengths = Tensors.toFloatArray (result.Encoder.Mask.ne((0).ToScalar()).sum(1L).to_type(torch.float64)) |> Array.map int64
                    let losses = Tensors.toFloatArray (Ctc.perUtterance logits lengths targets)
                    Array.map2 (fun (l: float) (t: int[]) -> l / float (max 1 t.Length)) losses targets |> Array.average
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } ctc4 perCharacter "per character, utterance mean"
                let grad name = g1 |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd |> Option.defaultValue 0.0
                Expect.isGreaterThan (grad "ctc_head.weight") 0.0 "the head"
                Expect.isGreaterThan (grad "model.encoder.conv1.weight") 0.0 "the encoder's stem"
                Expect.isGreaterThan (grad "model.encoder.layers.1.fc1.weight") 0.0 "an encoder layer after the predictor"
                let decoder = g1 |> List.filter (fun (n, _) -> n.StartsWith "model.decoder.") |> List.sumBy snd
                Expect.equal decoder 0.0 "w = 1: no gradient reaches the decoder"
            | _ -> failtest "finite losses"
        }

        test "the head is saved as ctc_head.* with magnet.json's ctc_head_classes, loaded back, and dropped on request" {
            use temp = new MagnetFixtures.Temp()
            use m = model 11L MagnetFixtures.config
            m.AttachCtcHead CtcAlphabet.classes
            // The head sits on the encoder's output: it trains with the encoder's later part, never with the decoder.
            Expect.isTrue (m.InGroup(ParameterGroup.EncoderAfterFirstPredictor, "ctc_head.weight")) "with the encoder after the first predictor"
            Expect.isFalse (m.InGroup(Decoder, "ctc_head.weight") || m.InGroup(Predictors, "ctc_head.bias")) "not the decoder or predictors"
            Expect.contains (m.SetTrainable [ Predictors; ExtraConvolutions; EncoderBeforeFirstPredictor; ParameterGroup.EncoderAfterFirstPredictor ]) "ctc_head.weight" "decoder-frozen's groups train it"
            MagnetFormat.save (temp.Sub "with") m
            use back = MagnetFormat.load (temp.Sub "with") torch.CPU torch.float32
            Expect.equal back.CtcHeadClasses (Some 39) "loaded with its head"
            Expect.isEmpty (changed (copies m.State) (copies back.State)) "the same tensors"
            MagnetFormat.saveWithoutCtcHead (temp.Sub "without") m
            Expect.isFalse ((File.ReadAllText(Path.Combine(temp.Sub "without", "magnet.json"))).Contains "ctc_head") "no field"
            use plain = MagnetFormat.load (temp.Sub "without") torch.CPU torch.float32
            Expect.isNone plain.CtcHeadClasses "no head"
            Expect.equal (plain.State |> List.map fst) (m.State |> List.map fst |> List.filter (fun n -> not (n.StartsWith "ctc_head."))) "the other tensors"
        }
    ]
