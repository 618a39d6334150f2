/// MagnetWhisper folders: save → load round trips, magnet.json, strict loading with named errors, atomic saves with
/// an injected failure, the pickle reader against hand-assembled opcodes, and import of original-project files
/// written by the test's torch.save writer.
module MagnetWhisper.Tests.Magnet.FormatTests

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Reference
open MagnetWhisper.Tests.Whisper.WhisperReference
open MagnetWhisper.Tests.Magnet.MagnetFixtures

/// BP1 (attention pooling) before layer 1, BP3 (BatchNorm buffers) before layer 2, one extra stride-2 convolution.
let private richOptions =
    let bp3 = { PredictorSlot.Create(2, Bp3, 0.5) with Targets = Row 0 }
    { (withPredictor 1 Bp1 0.25).WithSlot(bp3) with Convs = ConvConfig.FromStrides([ 2 ], config.DModel) }

let private encodeAll (m: MagnetWhisperModel) =
    let mel, mask = paddedMel 40L config [| 48L; 30L |]
    let enc = m.Encode(mel, Some mask)
    let logits = m.forward (mel, randomTokens 41L config 2L 5L)
    enc, logits

/// Rewrites model.safetensors of a folder through f (name, tensor) list → list.
let private rewriteWeights (dir: string) (f: (string * Tensor) list -> (string * Tensor) list) =
    let path = Path.Combine(dir, "model.safetensors")
    let tensors =
        use file = SafeTensors.openRead path
        [ for n in file.Names -> n, file.Load n ]
    SafeTensors.write path (Map [ "format", "pt" ]) (f tensors)

let private leftovers (parent: string) =
    Directory.GetDirectories parent |> Array.filter (fun d -> (Path.GetFileName d).StartsWith ".")

[<Tests>]
let tests =
    testList "magnet" [
        testList "format" [
            test "save → load gives identical outputs, options and tensors (predictors, BatchNorm buffers, extra convs)" {
                use _ = torch.NewDisposeScope()
                use tmp = new Temp()
                use m = magnet 42L config richOptions
                let dir = tmp.Sub "model"
                MagnetFormat.save dir m
                for f in [ "config.json"; "model.safetensors"; "magnet.json" ] do
                    Expect.isTrue (File.Exists(Path.Combine(dir, f))) $"{f} written"
                use loaded = MagnetFormat.load dir torch.CPU torch.float32
                Expect.equal loaded.Options m.Options "options"
                for (n, a), (n2, b) in List.zip m.State loaded.State do
                    Expect.equal n2 n "same names in the same order"
                    Expect.isTrue (identical a b) $"{n} bit-identical"
                Expect.isTrue (loaded.State |> List.exists (fun (n, _) -> n.EndsWith "running_mean")) "BatchNorm buffers are part of the state"
                let e1, l1 = encodeAll m
                let e2, l2 = encodeAll loaded
                close 0.0 "encoder output" e2.Hidden e1.Hidden
                close 0.0 "encoder mask" e2.Mask e1.Mask
                close 0.0 "logits" l2 l1
                // The usual Hugging Face keys are there, so the folder also loads as a plain Whisper (extra keys aside).
                use file = SafeTensors.openRead (Path.Combine(dir, "model.safetensors"))
                for n, _ in hfKeys config do
                    Expect.isTrue (file.Contains n) $"{n} stored"
            }

            test "magnet.json round-trips non-default options" {
                let slot =
                    { Layer = 2
                      Predictor =
                        { PredictorConfig.Default(Bp3, 0.2) with
                            Threshold = 0.7; Temperature = 0.5; HiddenDim = Some 16; Pooling = MeanPooling; UNetAlignment = OriginalCrop
                            RlBinomialCap = Some 2.0; Dropout = 0.0; Batching = OriginalBatching }
                      Targets = Row 1 }
                let bp1 =
                    { Layer = 4
                      Predictor = (PredictorConfig.Default(Bp1, 0.3)).WithOriginalSegmentation()
                      Targets = NextRow }
                let options =
                    { (withPredictor 0 Bp4 0.1).WithSlot(slot).WithSlot(bp1) with
                        Compatibility = Compatibility.Original
                        Convs = { Layers = [ { OutChannels = 32; Kernel = 5; Stride = 3 } ] }
                        RopeTheta = 5000.0 }
                let text = MagnetJson.write 5 options
                Expect.equal (MagnetJson.parse "magnet.json" 5 text) options "parsed back"
                Expect.stringContains text "\"type\": \"Identity\"" "identity slots listed"
                Expect.stringContains text "\"rl_pooling\": \"all_frames\"" "BP1 RL pooling written"
                Expect.stringContains text "\"batching\": \"original\"" "batching written"
                // A file written before these fields existed loads with the defaults.
                let stripped =
                    Text.RegularExpressions.Regex.Replace(
                        Text.RegularExpressions.Regex.Replace(text, ",\\s*\"batching\": \"[a-z_]+\"", ""),
                        ",\\s*\"rl_pooling\": \"[a-z_]+\"", "")
                Expect.isFalse (stripped.Contains "batching") "fields removed"
                let parsed = MagnetJson.parse "magnet.json" 5 stripped
                for s in parsed.Predictors do
                    Expect.equal s.Predictor.Batching BatchIndependent $"slot {s.Layer}: default batching"
                    Expect.equal s.Predictor.RlPooling PoolSampled $"slot {s.Layer}: default RL pooling"
            }

            test "loading names missing, unexpected and mis-shaped tensors, bad JSON and unknown predictor types" {
                use _ = torch.NewDisposeScope()
                use tmp = new Temp()
                use m = magnet 43L config (withPredictor 1 Bp1 0.25)
                let dir = tmp.Sub "model"
                let load () = (MagnetFormat.load dir torch.CPU torch.float32).Dispose()
                MagnetFormat.save dir m
                rewriteWeights dir (fun ts ->
                    ts |> List.filter (fun (n, _) -> n <> "model.encoder.boundary_predictors.1.pool_query") |> List.append [ "model.encoder.extra.weight", torch.zeros(2L) ])
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "missing tensors: model.encoder.boundary_predictors.1.pool_query" "names the missing tensor"
                Expect.stringContains e.Message "unexpected tensors: model.encoder.extra.weight" "names the unexpected tensor"
                MagnetFormat.save dir m
                rewriteWeights dir (List.map (fun (n, t) -> if n = "model.encoder.layer_norm.weight" then n, torch.zeros(31L) else n, t))
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "model.encoder.layer_norm.weight: checkpoint (31), model (32)" "names the tensor and both shapes"
                MagnetFormat.save dir m
                let json = Path.Combine(dir, "magnet.json")
                let good = File.ReadAllText json
                File.WriteAllText(json, good.Replace("BoundaryPredictor1", "BoundaryPredictor9"))
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "unknown predictor type 'BoundaryPredictor9'" "names the type"
                File.WriteAllText(json, good.Substring(0, good.Length / 2))
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "invalid JSON" "bad JSON"
                Expect.stringContains e.Message "magnet.json" "names the file"
                File.WriteAllText(json, good.Replace("\"prior\"", "\"priors\""))
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "unknown field 'priors'" "names the field"
                File.Delete json
                let e = Expect.throwsC load id
                Expect.stringContains e.Message "no magnet.json" "not a MagnetWhisper folder"
            }

            test "an injected failure midway through a save keeps the previous folder; other files are carried over" {
                use _ = torch.NewDisposeScope()
                use tmp = new Temp()
                use a = magnet 44L config (withPredictor 1 Bp1 0.25)
                use b = magnet 45L config (withPredictor 0 Bp2 0.5)
                let dir = tmp.Sub "model"
                MagnetFormat.save dir a
                File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{}")
                let injected =
                    Expect.throwsC (fun () ->
                        use _ = AtomicWrite.Faults.inject (fun staged -> if File.Exists(Path.Combine(staged, "model.safetensors")) then failwith "injected failure")
                        MagnetFormat.save dir b) id
                Expect.stringContains injected.Message "injected" "the failure propagates"
                let e2 = Expect.throwsC (fun () -> MagnetFormat.saveWith { SaveOptions.Default with MaxShardBytes = Some 0L } dir b) id
                Expect.stringContains e2.Message "MaxShardBytes" "a failure inside the weight writer"
                Expect.isEmpty (leftovers tmp.Path) "no staging folders left"
                let kept = MagnetFormat.load dir torch.CPU torch.float32
                Expect.equal kept.Options a.Options "the previous model is intact"
                for (n, x), (_, y) in List.zip a.State kept.State do
                    Expect.isTrue (identical x y) n
                kept.Dispose()
                MagnetFormat.save dir b
                let replaced = MagnetFormat.load dir torch.CPU torch.float32
                Expect.equal replaced.Options b.Options "replaced"
                replaced.Dispose()
                Expect.isTrue (File.Exists(Path.Combine(dir, "tokenizer.json"))) "unrelated files are kept"
                Expect.isEmpty (leftovers tmp.Path) "no backup folders left"
            }
        ]

        testList "pickle" [
            test "a hand-assembled protocol-2 pickle of a small dict" {
                // {'a': 1, 'b': [2.5, None, True], 'c': <the key 'a' again, via the memo>, 'd': -5, 'e': 2**40, 'f': ()}
                let bytes =
                    [| yield! [| 0x80uy; 2uy |] // PROTO 2
                       yield '}'B; yield 'q'B; yield 0uy // EMPTY_DICT, BINPUT 0
                       yield '('B // MARK
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'a'B; yield 'q'B; yield 1uy // BINUNICODE 'a', BINPUT 1
                       yield 'K'B; yield 1uy // BININT1 1
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'b'B; yield 'q'B; yield 2uy
                       yield ']'B; yield 'q'B; yield 3uy // EMPTY_LIST, BINPUT 3
                       yield '('B
                       yield 'G'B; yield! [| 0x40uy; 0x04uy; 0uy; 0uy; 0uy; 0uy; 0uy; 0uy |] // BINFLOAT 2.5 (big-endian)
                       yield 'N'B // NONE
                       yield 0x88uy // NEWTRUE
                       yield 'e'B // APPENDS
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'c'B; yield 'q'B; yield 4uy
                       yield 'h'B; yield 1uy // BINGET 1
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'd'B; yield 'q'B; yield 5uy
                       yield 'J'B; yield! [| 0xfbuy; 0xffuy; 0xffuy; 0xffuy |] // BININT -5
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'e'B; yield 'q'B; yield 6uy
                       yield 0x8auy; yield 6uy; yield! [| 0uy; 0uy; 0uy; 0uy; 0uy; 1uy |] // LONG1 2**40
                       yield 'X'B; yield! [| 1uy; 0uy; 0uy; 0uy |]; yield 'f'B; yield 'q'B; yield 7uy
                       yield ')'B // EMPTY_TUPLE
                       yield 'u'B // SETITEMS
                       yield '.'B |] // STOP
                let v = Pickle.load bytes
                let expected =
                    PDict(
                        ResizeArray
                            [ PString "a", PInt 1L
                              PString "b", PList(ResizeArray [ PFloat 2.5; PNone; PBool true ])
                              PString "c", PString "a"
                              PString "d", PInt -5L
                              PString "e", PInt(1L <<< 40)
                              PString "f", PTuple [] ])
                Expect.equal v expected "decoded"
                let e = Expect.throwsC (fun () -> Pickle.load [| 0x80uy; 2uy; 'i'B |] |> ignore) id
                Expect.stringContains e.Message "unsupported opcode 0x69" "names an unsupported opcode"
                let e = Expect.throwsC (fun () -> Pickle.load [| 0x80uy; 2uy; 'X'B; 9uy; 0uy |] |> ignore) id
                Expect.stringContains e.Message "unexpected end" "truncated data"
            }

            test "torch.save archives round-trip: dtypes, shapes, offsets and strides, nested containers" {
                use _ = torch.NewDisposeScope()
                use tmp = new Temp()
                torch.manual_seed 46L |> ignore
                let f32 = torch.randn(3L, 4L)
                let f16 = torch.randn(5L).to_type(torch.float16)
                let i64 = torch.tensor([| 7L; -3L; 1L <<< 40 |])
                let storage = torch.arange(12.0f)
                let value =
                    Dict'
                        [ Str' "w", Tensor' f32
                          Str' "h", Tensor' f16
                          Str' "n", Tensor' i64
                          Str' "view", View'(storage, 2L, [ 2L; 3L ], [ 1L; 4L ])
                          Str' "pairs", List' [ Tuple' [ Int' 0; Float' 0.08 ]; Tuple' [ Int' 3; Str' "BoundaryPredictor1" ] ]
                          Str' "none", None'
                          Str' "state", TorchWriter.stateDict [ "a.weight", f32 ] ]
                let path = tmp.Sub "x.pt"
                TorchWriter.save path value
                use archive = TorchArchive.Open path
                let items = Pickle.items archive.Root |> List.map (fun (k, v) -> (match k with PString s -> s | _ -> failwith "key"), v)
                let tensor name =
                    match items |> List.find (fst >> (=) name) |> snd with
                    | PTensor r -> archive.Tensor r
                    | other -> failwith $"{name}: {other}"
                Expect.isTrue (identical (tensor "w") f32) "float32"
                Expect.isTrue (identical (tensor "h") f16) "float16"
                Expect.isTrue (identical (tensor "n") i64) "int64"
                Expect.isTrue (identical (tensor "view") (storage.as_strided([| 2L; 3L |], [| 1L; 4L |], 2L).contiguous())) "offset and strides"
                match items |> List.find (fst >> (=) "pairs") |> snd with
                | PList l -> Expect.equal (List.ofSeq l) [ PTuple [ PInt 0L; PFloat 0.08 ]; PTuple [ PInt 3L; PString "BoundaryPredictor1" ] ] "tuples"
                | other -> failwith $"pairs: {other}"
                Expect.equal (items |> List.find (fst >> (=) "none") |> snd) PNone "None"
                match items |> List.find (fst >> (=) "state") |> snd with
                | PDict d -> Expect.equal (d |> Seq.map fst |> List.ofSeq) [ PString "a.weight" ] "OrderedDict"
                | other -> failwith $"state: {other}"
            }
        ]

        testList "import" [
            test "an original checkpoint (safetensors or pytorch_model.bin + boundary files) imports with equal weights and config" {
                use _ = torch.NewDisposeScope()
                use tmp = new Temp()
                let options =
                    (withPredictor 1 Bp1 0.25).WithPredictor(2, Bp4, 0.125).WithConvStrides(config.DModel, [ 2 ])
                use w = whisper 47L config
                use reference = MagnetWhisperModel.FromWhisper(w, options)
                reference.eval()
                // Distinct temperatures and thresholds so that they are read from the right lists.
                let dir = tmp.Sub "original"
                w.Save dir
                let stateOf (prefix: string) =
                    [ for n, t in reference.State do
                          if n.StartsWith prefix then n.Substring prefix.Length, t ]
                TorchWriter.save (Path.Combine(dir, "boundary_predictors.bin"))
                    (Dict' [ Str' "1", TorchWriter.stateDict (stateOf "model.encoder.boundary_predictors.1.")
                             Str' "2", TorchWriter.stateDict (stateOf "model.encoder.boundary_predictors.2.") ])
                TorchWriter.save (Path.Combine(dir, "additional_convs.bin")) (TorchWriter.stateDict (stateOf "model.encoder.additional_convs."))
                let pairs (xs: (int * Py) list) = List' [ for l, v in xs -> Tuple' [ Int'(int64 l); v ] ]
                TorchWriter.save (Path.Combine(dir, "boundary_params.pt"))
                    (Dict'
                        [ Str' "layer_priors", pairs [ 1, Float' 0.25; 2, Float' 0.125 ]
                          Str' "layer_temps", pairs [ 1, Float' 0.5; 2, Int' 1L ]
                          Str' "layer_thresholds", pairs [ 1, Float' 0.6; 2, Float' 0.5 ]
                          Str' "layer_types", pairs [ 0, Str' "Identity"; 1, Str' "BoundaryPredictor1"; 2, Str' "BoundaryPredictor4" ]
                          Str' "conv_config", Dict' [ Str' "layers", List' [ Tuple' [ Int' 32L; Int' 3L; Int' 2L ] ] ] ])
                let check (label: string) =
                    use imported = OriginalCheckpoint.import ImportOptions.Original dir torch.CPU torch.float32
                    Expect.equal imported.Config w.Config $"{label}: config"
                    let slots = imported.Options.Predictors
                    Expect.equal [ for s in slots -> s.Layer, s.Predictor.Kind, s.Predictor.Prior, s.Predictor.Temperature, s.Predictor.Threshold ]
                        [ 1, Bp1, 0.25, 0.5, 0.6; 2, Bp4, 0.125, 1.0, 0.5 ] $"{label}: slots"
                    Expect.equal slots.[0].Predictor.Pooling AttentionPooling $"{label}: BP1 pooling inferred from pool_query"
                    Expect.equal imported.Options.Convs options.Convs $"{label}: conv config"
                    Expect.equal imported.Options.Compatibility Compatibility.Original $"{label}: the original's numbers"
                    Expect.equal [ for s in slots -> s.Predictor.Batching, s.Predictor.RlPooling ]
                        [ OriginalBatching, PoolAllFrames; OriginalBatching, PoolSampled ] $"{label}: original batching, BP1 all-ones RL pooling"
                    for (n, a), (n2, b) in List.zip reference.State imported.State do
                        Expect.equal n2 n $"{label}: names"
                        Expect.isTrue (identical a b) $"{label}: {n}"
                check "safetensors"
                // pytorch_model.bin holding the full state dict (as save_pretrained without safetensors), BP keys included.
                File.Delete(Path.Combine(dir, "model.safetensors"))
                TorchWriter.save (Path.Combine(dir, "pytorch_model.bin")) (TorchWriter.stateDict reference.State)
                check "pytorch_model.bin"
                File.Delete(Path.Combine(dir, "boundary_predictors.bin"))
                let e = Expect.throwsC (fun () -> (OriginalCheckpoint.import ImportOptions.Original dir torch.CPU torch.float32).Dispose()) id
                Expect.stringContains e.Message "boundary_predictors.bin is missing" "names the missing file"
            }
        ]
    ]
