module MagnetWhisper.Tests.Training.SpecAugmentTests

// SpecAugment on a batch of random log-mel features with rows of different valid lengths: the drawn bands stay within
// their bounds (and reach them), the changed cells are exactly the union of the drawn bands over valid frames
// (recomputed here cell by cell) and hold the row's mean (recomputed here in float64), padding is untouched, and the
// same seed masks the same way.

open Expecto
open System.IO
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Training

let private settings = { FrequencyMasks = 2; FrequencyWidth = 27; TimeMasks = 3; TimeWidth = 100; TimeRatio = 0.2 }

let private batch () =
    torch.manual_seed 5L |> ignore
    let mel = torch.randn([| 3L; 80L; 300L |])
    let valid = [| 300; 150; 40 |]
    let mask = torch.stack([| for v in valid -> torch.cat([| torch.ones([| int64 v |]); torch.zeros([| 300L - int64 v |]) |]) |])
    mel, mask, valid

[<Tests>]
let tests =
    testList "training.specaugment" [
        test "drawn bands stay within F, min(T, ⌊p·τ⌋) and the utterance, and reach their bounds" {
            use g = SpecAugment.generator 1L
            let valid = [| 300; 150; 40; 1000 |]
            let mutable widestF, widestT = 0, Array.zeroCreate valid.Length
            for _ in 1 .. 500 do
                let frequency, time = SpecAugment.draw settings g 80 valid
                Expect.equal frequency.Length (valid.Length * 2) "m_F bands per row"
                Expect.equal time.Length (valid.Length * 3) "m_T spans per row"
                for _, first, width in frequency do
                    Expect.isTrue (width >= 0 && width <= 27 && first >= 0 && first + width <= 80) $"band {first}+{width}"
                    widestF <- max widestF width
                for row, first, width in time do
                    let limit = min 100 (int (0.2 * float valid.[row]))
                    Expect.isTrue (width >= 0 && width <= limit && first >= 0 && first + width <= valid.[row]) $"row {row}: span {first}+{width} (limit {limit})"
                    widestT.[row] <- max widestT.[row] width
            Expect.equal widestF 27 "F reached"
            Expect.equal widestT [| 60; 30; 8; 100 |] "min(T, ⌊0.2·τ⌋) reached"
        }

        test "changed cells are the drawn bands over valid frames and hold the row's mean; padding is untouched" {
            use _ = torch.NewDisposeScope()
            let mel, mask, valid = batch ()
            use g = SpecAugment.generator 9L
            let out = SpecAugment.apply settings g mel mask
            use again = SpecAugment.generator 9L
            let frequency, time = SpecAugment.draw settings again 80 valid
            let x = mel.to_type(torch.float64)
            let y = out.to_type(torch.float64)
            for row in 0 .. 2 do
                let xs = Tensors.toFloatArray (x.[row].flatten())
                let ys = Tensors.toFloatArray (y.[row].flatten())
                let at (bin: int) (frame: int) = bin * 300 + frame
                // The row's mean over its valid cells, summed here in float64.
                let mean = (seq { for b in 0 .. 79 do for f in 0 .. valid.[row] - 1 -> xs.[at b f] } |> Seq.sum) / float (80 * valid.[row])
                let inBand (bands: (int * int * int)[]) (i: int) = bands |> Array.exists (fun (r, first, width) -> r = row && i >= first && i < first + width)
                let mutable masked = 0
                for b in 0 .. 79 do
                    for f in 0 .. 299 do
                        let expectedMasked = f < valid.[row] && (inBand frequency b || inBand time f)
                        if expectedMasked then
                            masked <- masked + 1
                            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } ys.[at b f] mean $"row {row} ({b}, {f}) holds the mean"
                        else Expect.equal ys.[at b f] xs.[at b f] $"row {row} ({b}, {f}) unchanged"
                Expect.isGreaterThan masked 0 $"row {row}: something is masked"
        }

        test "spec_augment: null/false off, true the defaults, an object overrides some; config.json keeps it; errors name the key" {
            let c = TrainConfig.Default
            Expect.isNone c.SpecAugment "off by default"
            Expect.equal (TrainConfig.set "spec_augment=true" c).SpecAugment (Some SpecAugmentSettings.Default) "true"
            Expect.isNone (TrainConfig.set "spec_augment=false" c).SpecAugment "false"
            let custom = TrainConfig.set """spec_augment={"time_masks": 5, "time_ratio": 0.05}""" c
            Expect.equal custom.SpecAugment (Some { SpecAugmentSettings.Default with TimeMasks = 5; TimeRatio = 0.05 }) "object over the defaults"
            let back = TrainConfig.applyJson "config.json" (TrainConfig.toJson custom) TrainConfig.Default
            Expect.equal back.SpecAugment custom.SpecAugment "written and read back"
            let e = Expect.throwsC (fun () -> TrainConfig.set """spec_augment={"width": 3}""" c |> ignore) id
            Expect.stringContains e.Message "'width'" "names the unknown key"
            let e = Expect.throwsC (fun () -> TrainConfig.set """spec_augment={"time_ratio": 2}""" c |> ignore) id
            Expect.stringContains e.Message "spec_augment.time_ratio" "names the key"
            Expect.isTrue (e :? InvalidDataException) "a configuration error"
        }

        test "the same seed masks the same way; another seed differently; the input is not changed" {
            use _ = torch.NewDisposeScope()
            let mel, mask, _ = batch ()
            let before = mel.clone()
            let withSeed (s: int64) =
                use g = SpecAugment.generator s
                SpecAugment.apply settings g mel mask
            let a, b, c = withSeed 4L, withSeed 4L, withSeed 5L
            Expect.isTrue (a.eq(b).all().item<bool>()) "same seed, same output"
            Expect.isFalse (a.eq(c).all().item<bool>()) "another seed, another output"
            Expect.isTrue (mel.eq(before).all().item<bool>()) "mel unchanged"
        }
    ]
