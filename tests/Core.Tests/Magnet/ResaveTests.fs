/// MagnetResave: a folder re-saved in bfloat16 (with or without its CTC head) holds each tensor as torch's own
/// rounding of the source's, says what it did, and its check finds a folder that is not the source's rounding.
module MagnetWhisper.Tests.Magnet.ResaveTests

open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Magnet

/// A converted random model with a BP1 before layer 1 and a 39-class CTC head, saved in float32.
let private source (temp: MagnetFixtures.Temp) =
    let dir = temp.Sub "source"
    use m = MagnetFixtures.magnet 3L MagnetFixtures.config (MagnetFixtures.withPredictor 1 Bp1 0.3)
    torch.manual_seed 5L |> ignore
    m.AttachCtcHead 39
    MagnetFormat.save dir m
    dir

/// name → (stored dtype, float32 values) of a folder's floating-point tensors.
let private floats (dir: string) =
    use w = CheckpointWeights.Open dir
    Map [ for n in w.Names do
              match (w.Info n).DType with
              | F32 | F16 | BF16 as d -> n, (d, w.Load(n, torch.float32))
              | _ -> () ]

let private same (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && (a.eq b).all().item<bool> ()

[<Tests>]
let tests =
    testSequenced <| testList "magnet.resave" [
        test "bfloat16 with the head: every tensor is torch's bfloat16 rounding of the source's, the report says so" {
            use temp = new MagnetFixtures.Temp()
            let src = source temp
            let out = temp.Sub "bf16"
            let report = MagnetResave.run { DType = Some torch.bfloat16; DropCtcHead = false } src out
            Expect.equal (report.SourceDType, report.DType) (torch.float32, torch.bfloat16) "dtypes"
            Expect.equal (report.SourceCtcHead, report.CtcHead) (Some 39, Some 39) "the head kept"
            Expect.equal (MagnetResave.storedDType out) torch.bfloat16 "stored"
            let before, after = floats src, floats out
            Expect.equal (Set(Map.keys after)) (Set(Map.keys before)) "the same tensors"
            for KeyValue(name, (dtype, t)) in after do
                Expect.equal dtype BF16 $"{name} stored in bfloat16"
                use expected = (snd before.[name]).to_type(torch.bfloat16).to_type(torch.float32)
                Expect.isTrue (same expected t) $"{name}: the source rounded through bfloat16"
            Expect.isTrue (after |> Map.exists (fun n (_, t) -> not (same (snd before.[n]) t))) "some value was rounded (else the comparison proves little)"
            Expect.isLessThan report.Bytes report.SourceBytes "fewer bytes"
            MagnetResave.verify src out report
        }

        test "the head dropped: no ctc_head tensor, no ctc_head_classes, and the folder loads without one" {
            use temp = new MagnetFixtures.Temp()
            let src = source temp
            let out = temp.Sub "nohead"
            let report = MagnetResave.run { DType = None; DropCtcHead = true } src out
            Expect.equal (report.DType, report.CtcHead) (torch.float32, None) "float32 kept, no head"
            Expect.isFalse (floats out |> Map.exists (fun n _ -> n.StartsWith "ctc_head.")) "no head tensors"
            Expect.isFalse ((File.ReadAllText(Path.Combine(out, "magnet.json"))).Contains "ctc_head_classes") "magnet.json"
            use loaded = MagnetFormat.load out torch.CPU torch.float32
            Expect.isNone loaded.CtcHeadClasses "no head loaded"
            MagnetResave.verify src out report
        }

        test "verify finds a folder that is not the source's rounding, and a dtype or head it does not have" {
            use temp = new MagnetFixtures.Temp()
            let src = source temp
            let out = temp.Sub "out"
            let report = MagnetResave.run { DType = Some torch.float16; DropCtcHead = true } src out
            let fails (r: ResaveReport) (expected: string) =
                match (try Ok(MagnetResave.verify src out r) with e -> Error e) with
                | Error(:? InvalidDataException as e) -> Expect.stringContains e.Message expected "the message"
                | other -> failtestf "expected InvalidDataException, got %A" other
            fails { report with DType = torch.bfloat16 } "stores Float16, expected BFloat16"
            fails { report with CtcHead = Some 39 } "CTC head"
            // Another model's weights in the same shape.
            use other = MagnetFixtures.magnet 4L MagnetFixtures.config (MagnetFixtures.withPredictor 1 Bp1 0.3)
            MagnetFormat.saveAs false { SaveOptions.Default with DType = Some torch.float16 } out other
            fails report "differs from the source rounded to"
        }
    ]
