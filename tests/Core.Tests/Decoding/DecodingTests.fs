module MagnetWhisper.Tests.Decoding.DecodingTests

open System
open System.IO
open System.Threading
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Decoding
open MagnetWhisper.Core.Text
open MagnetWhisper.Tests.Decoding.ToyModel

let private negInf = Single.NegativeInfinity
let private ct = CancellationToken.None

/// Row k of a (N, V) float tensor as an array.
let private row (t: Tensor) (k: int) : float32[] =
    use r = t.[int64 k].contiguous()
    r.data<float32>().ToArray()

let private randomLogits (seed: int64) (n: int) =
    torch.manual_seed seed |> ignore
    torch.randn([| int64 n; int64 tokenizer.VocabSize |])

/// Options that leave the toy's distribution alone: no suppression, no timestamps, English.
let private plain =
    { DecodingOptions.defaults with
        Language = Some "en"
        SuppressBlank = false
        SuppressTokens = []
        WithoutTimestamps = true }

/// A deterministic pseudo-random logit in [-2, 2] for (context, token).
let private pseudo (context: int[]) (token: int) =
    let h = context |> Array.fold (fun acc t -> acc * 1_000_003L + int64 t) (int64 token * 7919L + 17L)
    float32 (Random(int (h % 2_147_483_647L)).NextDouble() * 4.0 - 2.0)

let private decodeToy (toy: Toy) (options: DecodingOptions) (values: float list) =
    use _ = torch.NewDisposeScope()
    use _ = torch.inference_mode()
    let model = toy :> ISpeechModel
    let audio = model.Encode(mels values, None)
    Search.decodeWindow model tokenizer options audio (Array.create values.Length WindowRow.defaults) ct

/// log-softmax of the toy's logits (listed tokens + floor elsewhere) at one context, in float64.
let private logSoftmax (pairs: (int * float32) list) (token: int) =
    let others = float (tokenizer.VocabSize - pairs.Length)
    let values = pairs |> List.map (snd >> float)
    let m = List.max values
    let z = (values |> List.sumBy (fun x -> exp (x - m))) + others * exp (float floor - m)
    let x = pairs |> List.tryFind (fst >> (=) token) |> Option.map (snd >> float) |> Option.defaultValue (float floor)
    x - m - log z

let private tsRulesTests =
    testList "filters" [
        test "suppress blank forbids the blank and end-of-text only at the first sampled position" {
            use _ = torch.NewDisposeScope()
            let logits = randomLogits 1L 2
            let before = row logits 1
            (Filters.suppressBlank tokenizer).Apply(logits, [| [||]; [| word "hello" |] |])
            let first = row logits 0
            let blank = tokenizer.Encode " "
            for t in Array.append blank [| eot |] do
                Expect.equal first.[t] negInf $"token {t} suppressed at the first step"
            Expect.equal (first |> Array.filter Single.IsNegativeInfinity |> Array.length) (blank.Length + 1) "nothing else"
            Expect.sequenceEqual (row logits 1) before "a row that has sampled is untouched"
        }

        test "suppress tokens with -1 forbids the non-speech symbols, the checkpoint's list and the special tokens" {
            use _ = torch.NewDisposeScope()
            let ids = Filters.suppressedIds tokenizer [| 42; 43 |] [ -1 ]
            let nonSpeech = Tokenizer.nonSpeechTokens tokenizer
            for t in Array.append nonSpeech [| 42; 43; specials.Transcribe; specials.Translate; specials.StartOfTranscript; specials.StartOfPrev; specials.StartOfLm; specials.NoSpeech |] do
                Expect.contains ids t $"{t} is suppressed"
            Expect.isFalse (Array.contains eot ids) "end-of-text stays allowed"
            Expect.isFalse (Array.contains (ts 10) ids) "timestamps stay allowed"
            let explicitIds = Filters.suppressedIds tokenizer [| 42 |] [ 7; 9 ]
            Expect.sequenceEqual explicitIds (Array.sort [| 7; 9; specials.Transcribe; specials.Translate; specials.StartOfTranscript; specials.StartOfPrev; specials.StartOfLm; specials.NoSpeech |]) "an explicit list replaces -1's symbols"
            let logits = randomLogits 2L 2
            let before = row logits 0
            (Filters.suppressTokens ids).Apply(logits, [| [||]; [| 5 |] |])
            for k in 0 .. 1 do
                let after = row logits k
                for t in ids do Expect.equal after.[t] negInf $"row {k} token {t}"
                Expect.equal (after |> Array.filter Single.IsNegativeInfinity |> Array.length) ids.Length $"row {k}: only those"
            Expect.equal (row logits 0).[100] before.[100] "other logits unchanged"
        }

        test "timestamp rules: at the start only timestamps up to the max initial timestamp" {
            use _ = torch.NewDisposeScope()
            let logits = randomLogits 3L 1
            (Filters.applyTimestampRules specials (Some 50)).Apply(logits, [| [||] |])
            let r = row logits 0
            Expect.isTrue (r.[.. tb - 1] |> Array.forall Single.IsNegativeInfinity) "no text (nor end-of-text) first"
            Expect.isTrue (r.[tb .. tb + 50] |> Array.forall (fun x -> not (Single.IsInfinity x))) "<|0.00|> … <|1.00|> allowed"
            Expect.isTrue (r.[tb + 51 ..] |> Array.forall Single.IsNegativeInfinity) "later timestamps forbidden"
        }

        test "timestamp rules: a lone timestamp is followed by a timestamp (not earlier) or end-of-text" {
            use _ = torch.NewDisposeScope()
            // a strong end-of-text logit, so that the probability-mass rule does not decide
            let logits = randomLogits 4L 1
            logits.[0L, int64 eot].fill_((15.0).ToScalar()) |> ignore
            (Filters.applyTimestampRules specials (Some 50)).Apply(logits, [| [| ts 3; word "hello"; ts 40 |] |])
            let r = row logits 0
            Expect.isTrue (r.[.. eot - 1] |> Array.forall Single.IsNegativeInfinity) "text forbidden"
            Expect.isFalse (Single.IsInfinity r.[eot]) "end-of-text allowed"
            Expect.isTrue (r.[tb .. tb + 39] |> Array.forall Single.IsNegativeInfinity) "earlier timestamps forbidden"
            Expect.isTrue (r.[tb + 40 ..] |> Array.forall (fun x -> not (Single.IsInfinity x))) "the same or a later timestamp allowed"
            Expect.equal r.[specials.NoTimestamps] negInf "<|notimestamps|> forbidden"
        }

        test "timestamp rules: after a pair no timestamp; after text only strictly later timestamps (monotonic)" {
            use _ = torch.NewDisposeScope()
            let logits = randomLogits 5L 2
            logits.narrow(1L, 0L, int64 tb).add_((5.0).ToScalar()) |> ignore
            let sampled = [| [| ts 0; word "hello"; ts 40; ts 40 |]; [| ts 0; word "hello"; ts 40; ts 40; word "world" |] |]
            (Filters.applyTimestampRules specials None).Apply(logits, sampled)
            let pair = row logits 0
            Expect.isTrue (pair.[tb ..] |> Array.forall Single.IsNegativeInfinity) "after a pair: no timestamp"
            Expect.isFalse (Single.IsInfinity pair.[word "world"]) "after a pair: text allowed"
            let text = row logits 1
            Expect.isTrue (text.[tb .. tb + 40] |> Array.forall Single.IsNegativeInfinity) "timestamps up to the last one forbidden"
            Expect.isFalse (Single.IsInfinity text.[tb + 41]) "a later timestamp allowed"
            Expect.isFalse (Single.IsInfinity text.[word "again"]) "text allowed"
        }

        test "timestamp rules: when the timestamps' total probability beats every text token, text is forbidden" {
            use _ = torch.NewDisposeScope()
            // row 0: flat logits, so the 1501 timestamps together outweigh any single text token;
            // row 1: one text token far above everything
            let logits = torch.zeros([| 2L; int64 tokenizer.VocabSize |])
            logits.[1L, int64 (word "hello")].fill_((20.0).ToScalar()) |> ignore
            let sampled = [| [| ts 0; word "a" |]; [| ts 0; word "a" |] |]
            (Filters.applyTimestampRules specials None).Apply(logits, sampled)
            let flat = row logits 0
            Expect.isTrue (flat.[.. tb - 1] |> Array.forall Single.IsNegativeInfinity) "row 0: text forbidden"
            Expect.isFalse (Single.IsInfinity flat.[tb + 5]) "row 0: later timestamps allowed"
            let peaked = row logits 1
            Expect.equal peaked.[word "hello"] 20.0f "row 1: the text token stays"
            Expect.isFalse (Single.IsInfinity peaked.[tb + 5]) "row 1: timestamps allowed too"
        }

        test "timestampBans lists whisper's ranges" {
            let vocab = tokenizer.VocabSize
            let nt = specials.NoTimestamps, specials.NoTimestamps + 1
            Expect.equal (Filters.timestampBans specials (Some 50) vocab [||]) [ nt; (0, tb); (tb + 51, vocab) ] "start"
            Expect.equal (Filters.timestampBans specials None vocab [| ts 7 |]) [ nt; (tb, vocab); (tb, tb + 8) ] "one timestamp counts as a pair"
            Expect.equal (Filters.timestampBans specials None vocab [| ts 7; 11; ts 9 |]) [ nt; (0, eot); (tb, tb + 9) ] "lone timestamp"
        }
    ]

let private searchTests =
    testList "search" [
        test "greedy decoding on the toy model equals the argmax chain" {
            let words = [| word "a"; word "b"; word "c" |]
            let table (sampled: int[]) =
                if sampled.Length >= 6 then [ eot, 0.0f ]
                else [ for t in Array.append words [| eot |] -> t, pseudo sampled t ]
            let toy = ofSampled table
            let result = (decodeToy toy plain [ 0.0 ]).[0]
            let rec chain (acc: int list) (lp: float) =
                let sampled = List.rev acc |> Array.ofList
                let pairs = table sampled
                let best = pairs |> List.maxBy snd |> fst
                let lp = lp + logSoftmax pairs best
                if best = eot || sampled.Length + 1 = 224 then sampled, lp else chain (best :: acc) lp
            let expected, lp = chain [] 0.0
            Expect.sequenceEqual result.Tokens expected "tokens"
            Expect.floatClose { absolute = 1e-4; relative = 1e-5 } result.SumLogProb lp "sum of log-probabilities"
            Expect.floatClose Accuracy.high result.AvgLogProb (result.SumLogProb / float (expected.Length + 1)) "average"
        }

        testList "beam search finds the exhaustive best sequence under the length penalty" [
            for penalty in [ None; Some 0.0; Some 0.5; Some 1.0 ] do
                test $"length penalty {penalty}" {
                    for seed in 1 .. 4 do
                        let a, b = word "a", word "b"
                        let table (sampled: int[]) =
                            if sampled.Length >= 3 then [ eot, 0.0f ]
                            else [ for t in [ a; b; eot ] -> t, pseudo (Array.append [| seed |] sampled) t ]
                        let toy = ofSampled table
                        let options = { plain with BeamSize = Some 9; Patience = Some 20.0; SampleLen = Some 5; LengthPenalty = penalty }
                        let result = (decodeToy toy options [ 0.0 ]).[0]
                        let candidates =
                            [ for length in 0 .. 3 do
                                  for bits in 0 .. (1 <<< length) - 1 ->
                                      [| for i in 0 .. length - 1 -> if (bits >>> i) &&& 1 = 1 then b else a |] ]
                        let logProb (s: int[]) =
                            let steps = [ for i in 0 .. s.Length - 1 -> logSoftmax (table s.[.. i - 1]) s.[i] ]
                            List.sum steps + logSoftmax (table s) eot
                        let score (s: int[]) =
                            let lp = logProb s
                            match penalty with
                            | None -> lp / float s.Length
                            | Some alpha -> lp / Math.Pow((5.0 + float s.Length) / 6.0, alpha)
                        let best = candidates |> List.maxBy score
                        Expect.sequenceEqual result.Tokens best $"seed {seed}: the best sequence"
                        Expect.floatClose { absolute = 1e-4; relative = 1e-5 } result.SumLogProb (logProb best) $"seed {seed}: its log-probability"
                }
        ]

        test "beam search beats greedy on a garden path" {
            let a, b, c = word "a", word "b", word "c"
            let fork = [| word "w"; word "x"; word "y"; word "z" |]
            let table (sampled: int[]) =
                match sampled with
                | [||] -> [ a, 1.0f; b, 0.8f ]
                | [| t |] when t = a -> [ for f in fork -> f, 0.0f ]
                | [| t |] when t = b -> [ c, 8.0f ]
                | _ -> [ eot, 0.0f ]
            let greedy = (decodeToy (ofSampled table) plain [ 0.0 ]).[0]
            let beam = (decodeToy (ofSampled table) { plain with BeamSize = Some 2 } [ 0.0 ]).[0]
            Expect.equal greedy.Tokens.[0] a "greedy takes the locally best token"
            Expect.sequenceEqual beam.Tokens [| b; c |] "beam search keeps the better path"
            Expect.isGreaterThan beam.SumLogProb greedy.SumLogProb "and it is more probable"
        }

        test "sampling is seeded: equal seeds give equal samples, alone or in a batch; other seeds differ" {
            let words = [| for w in [ "a"; "b"; "c"; "d"; "e"; "f" ] -> word w |]
            let table (sampled: int[]) =
                if sampled.Length >= 12 then [ eot, 0.0f ] else [ for t in words -> t, 0.0f ]
            let options = { plain with Temperature = 1.0; BestOf = Some 3; Seed = 7L }
            let alone = decodeToy (ofSampled table) options [ 0.5 ]
            let again = decodeToy (ofSampled table) options [ 0.5 ]
            let batch = decodeToy (ofSampled table) options [ 0.5; 0.5; 0.5 ]
            let other = decodeToy (ofSampled table) { options with Seed = 8L } [ 0.5 ]
            Expect.sequenceEqual again.[0].Tokens alone.[0].Tokens "deterministic"
            for k in 0 .. 2 do
                Expect.sequenceEqual batch.[k].Tokens alone.[0].Tokens $"row {k} of a batch"
            Expect.notEqual other.[0].Tokens alone.[0].Tokens "another seed samples differently"
            Expect.equal alone.[0].Tokens.Length 12 "12 sampled words"
        }

        test "language detection picks the language token with the highest logit, per row" {
            let en, de, fr = Tokenizer.languageToken tokenizer "en", Tokenizer.languageToken tokenizer "de", Tokenizer.languageToken tokenizer "fr"
            let toy =
                Toy(fun history audio ->
                    if Array.last history = specials.StartOfTranscript then
                        [ en, 1.0f; de, (if audio > 0.0 then 0.0f else 3.0f); fr, 2.0f; word "hello", 9.0f ]
                    else [ eot, 0.0f ])
            use _ = torch.NewDisposeScope()
            let model = toy :> ISpeechModel
            let detected = Search.detectLanguage model tokenizer (model.Encode(mels [ -1.0; 1.0 ], None))
            Expect.equal (fst detected.[0]) "de" "row 0: German"
            Expect.equal (fst detected.[1]) "fr" "row 1: French"
            let probs = snd detected.[0]
            let z = exp 1.0 + exp 3.0 + exp 2.0
            Expect.floatClose { absolute = 1e-5; relative = 1e-4 } probs.["de"] (exp 3.0 / z) "softmax over language tokens only"
            Expect.floatClose { absolute = 1e-6; relative = 1e-3 } (probs |> Map.toSeq |> Seq.sumBy snd) 1.0 "a distribution"
            let results = decodeToy toy { plain with Language = None } [ -1.0; 1.0 ]
            Expect.equal (results |> Array.map _.Language) [| "de"; "fr" |] "decoding without a language detects it"
            Expect.isSome results.[0].LanguageProbs "with the probabilities"
        }

        test "prompts of different lengths in one batch give the tokens each gives alone" {
            let words = [| word "a"; word "b"; word "c" |]
            let toy () =
                Toy(fun history _ ->
                    let sampled = sampledOf history
                    if sampled.Length >= 5 then [ eot, 0.0f ]
                    else [ for t in words -> t, pseudo (Array.append [| history.Length |] sampled) t ])
            let decodeRows (rows: WindowRow[]) =
                use _ = torch.NewDisposeScope()
                let model = toy () :> ISpeechModel
                let audio = model.Encode(mels [ for _ in rows -> 0.0 ], None)
                Search.decodeWindow model tokenizer plain audio rows ct
            let rows = [| { WindowRow.defaults with Prompt = Some [| 1; 2; 3; 4; 5; 6 |] }; { WindowRow.defaults with Prompt = Some [||] }; { WindowRow.defaults with Prompt = Some [| 9 |] } |]
            let together = decodeRows rows
            for k in 0 .. 2 do
                let alone = decodeRows [| rows.[k] |]
                Expect.sequenceEqual together.[k].Tokens alone.[0].Tokens $"row {k}"
                Expect.floatClose Accuracy.high together.[k].SumLogProb alone.[0].SumLogProb $"row {k} log-probability"
        }
    ]

let private fallbackTests =
    testList "fallback" [
        test "a repetitive output falls back through every temperature" {
            let hello = word "hello"
            let toy = ofSampled (fun sampled -> if sampled.Length >= 40 then [ eot, 0.0f ] else [ hello, 0.0f ])
            use _ = torch.NewDisposeScope()
            use _ = torch.inference_mode()
            let model = toy :> ISpeechModel
            let audio = model.Encode(mels [ 0.0 ], None)
            let options = { TranscribeOptions.defaults with Decoding = plain }
            let r = (Fallback.decode model tokenizer options audio [| WindowRow.defaults |] ct).[0]
            Expect.isGreaterThan r.CompressionRatio 2.4 "too repetitive"
            Expect.isTrue (Fallback.needsFallback options r) "needs fallback"
            Expect.equal r.Temperature 1.0 "the last temperature was reached"
            Expect.equal toy.Calls (6 * 41) "six decodings of 41 steps"
        }

        test "a varied, confident output is kept at temperature 0" {
            let words = [| for w in [ "the"; "quick"; "brown"; "fox"; "jumps" ] -> word w |]
            let toy = ofSampled (fun sampled -> if sampled.Length >= words.Length then [ eot, 0.0f ] else [ words.[sampled.Length], 0.0f ])
            use _ = torch.NewDisposeScope()
            let model = toy :> ISpeechModel
            let audio = model.Encode(mels [ 0.0 ], None)
            let options = { TranscribeOptions.defaults with Decoding = plain }
            let r = (Fallback.decode model tokenizer options audio [| WindowRow.defaults |] ct).[0]
            Expect.equal r.Temperature 0.0 "no fallback"
            Expect.equal r.Text "the quick brown fox jumps" "text"
            Expect.equal toy.Calls 6 "one decoding"
        }

        test "an improbable output falls back, unless the window is silence" {
            let words = [| for w in [ "a"; "b"; "c"; "d" ] -> word w |]
            let toy (noSpeech: float32) =
                Toy(fun history _ ->
                    if Array.last history = specials.StartOfTranscript then [ specials.NoSpeech, noSpeech; word "x", 0.0f ]
                    elif (sampledOf history).Length >= 4 then [ eot, 0.0f ]
                    else [ for t in words -> t, 0.0f ])
            let run (noSpeech: float32) =
                use _ = torch.NewDisposeScope()
                let model = toy noSpeech :> ISpeechModel
                let audio = model.Encode(mels [ 0.0 ], None)
                let options = { TranscribeOptions.defaults with Decoding = plain; Temperatures = [ 0.0; 0.5 ] }
                (Fallback.decode model tokenizer options audio [| WindowRow.defaults |] ct).[0]
            let speech = run -10.0f
            Expect.isLessThan speech.AvgLogProb -1.0 "uniform over 4 words: log-probability below -1"
            Expect.equal speech.Temperature 0.5 "falls back"
            let silence = run 20.0f
            Expect.isGreaterThan silence.NoSpeechProb 0.6 "no-speech probability at the start-of-transcript token"
            Expect.equal silence.Temperature 0.0 "silence: kept"
        }
    ]

let private longFormTests =
    testList "long-form" [
        test "split: pairs of timestamps cut segments and the last pair sets the seek" {
            let a, b = word "a", word "b"
            let segments, seek = LongForm.split tb 2 500 3000 [| ts 0; a; ts 100; ts 100; b; ts 250; ts 250 |]
            Expect.equal [ for s in segments -> s.Start, s.End ] [ 5.0, 7.0; 7.0, 10.0 ] "segment times"
            Expect.equal [ for s in segments -> s.Tokens ] [ [| ts 0; a; ts 100 |]; [| ts 100; b; ts 250 |] ] "segment tokens"
            Expect.equal seek 1000 "seek to the last timestamp"
            let single, seek2 = LongForm.split tb 2 0 3000 [| ts 0; a; ts 100; ts 100; b; ts 250 |]
            Expect.equal single.Length 2 "a lone final timestamp closes a segment"
            Expect.equal seek2 3000 "and the window is done"
            let none, seek3 = LongForm.split tb 2 0 1200 [| ts 0; a; ts 120 |]
            Expect.equal [ for s in none -> s.Start, s.End ] [ 0.0, 2.4 ] "no pair: up to the last timestamp"
            Expect.equal seek3 1200 "no pair: the next window"
            let text, _ = LongForm.split tb 2 0 1200 [| a; b |]
            Expect.equal [ for s in text -> s.Start, s.End ] [ 0.0, 12.0 ] "no timestamps: the whole window"
        }

        test "long audio is transcribed window by window, seeking by the timestamps, prompted by the previous text" {
            let a, b = word "hello", word "world"
            let chain = [| ts 0; a; ts 100; ts 100; b; ts 250; ts 250; eot |]
            let starts = ResizeArray<int[]>()
            let toy =
                Toy(fun history _ ->
                    let sampled = sampledOf history
                    if afterSot history = [| Tokenizer.languageToken tokenizer "en"; specials.Transcribe |] then starts.Add history
                    [ chain.[min sampled.Length (chain.Length - 1)], 5.0f ])
            let options = { TranscribeOptions.defaults with Decoding = { DecodingOptions.defaults with Language = Some "en" } }
            let progress = ResizeArray<WindowProgress>()
            let samples = Array.zeroCreate<float32> (62 * 16000)
            let transcript = (LongForm.transcribe toy tokenizer options [| samples |] progress.Add ct).[0]
            let windows = 13 // seeks 0, 500, …, 6000 frames (5 s apart) over 6200 frames of content
            Expect.equal progress.Count windows "one report per window"
            Expect.equal transcript.Segments.Length (2 * windows) "two segments per window"
            transcript.Segments |> List.iteri (fun i s ->
                let w = i / 2
                Expect.equal s.Id i "ids"
                Expect.equal s.Seek (500 * w) "seek of the window"
                let expected = if i % 2 = 0 then 5.0 * float w, 5.0 * float w + 2.0 else 5.0 * float w + 2.0, 5.0 * float w + 5.0
                Expect.floatClose Accuracy.high s.Start (fst expected) $"segment {i} start"
                Expect.floatClose Accuracy.high s.End (snd expected) $"segment {i} end"
                Expect.equal s.Text (if i % 2 = 0 then " hello" else " world") "text")
            Expect.equal transcript.Text (String.replicate windows " hello world") "the whole text"
            Expect.equal transcript.Language "en" "language"
            Expect.sequenceEqual starts.[0] [| specials.StartOfTranscript; Tokenizer.languageToken tokenizer "en"; specials.Transcribe |] "first window: no prompt"
            Expect.sequenceEqual starts.[1].[.. 6] [| specials.StartOfPrev; ts 0; a; ts 100; ts 100; b; ts 250 |] "second window: prompted with the first's segments"
            let noContext = { options with ConditionOnPreviousText = false }
            starts.Clear()
            LongForm.transcribe toy tokenizer noContext [| samples |] ignore ct |> ignore
            Expect.isTrue (starts |> Seq.forall (fun h -> h.[0] = specials.StartOfTranscript)) "without conditioning: never a prompt"
        }
    ]

let private writerTests =
    let transcript =
        { Text = " Hello world. Tab\there --> \"q\" café ♪"
          Language = "en"
          Segments =
            [ { Id = 0; Seek = 0; Start = 0.0; End = 2.5; Text = " Hello world."; Tokens = [| 50364; 2425; 1002; 13; 50489 |]
                Temperature = 0.0; AvgLogProb = -0.25; CompressionRatio = 0.8666666666666667; NoSpeechProb = 0.012 }
              { Id = 1; Seek = 3000; Start = 62.345; End = 3725.0; Text = " Tab\there --> \"q\" café ♪"; Tokens = [| 50364; 50414 |]
                Temperature = 0.6000000000000001; AvgLogProb = -1.5e-05; CompressionRatio = 1.0; NoSpeechProb = 1e-7 } ] }
    testList "writers" [
        test "txt" { Expect.equal (Writers.txt transcript) "Hello world.\nTab\there --> \"q\" café ♪\n" "txt" }
        test "vtt" {
            Expect.equal (Writers.vtt transcript) "WEBVTT\n\n00:00.000 --> 00:02.500\nHello world.\n\n01:02.345 --> 01:02:05.000\nTab\there -> \"q\" café ♪\n\n" "vtt"
        }
        test "srt" {
            Expect.equal (Writers.srt transcript) "1\n00:00:00,000 --> 00:00:02,500\nHello world.\n\n2\n00:01:02,345 --> 01:02:05,000\nTab\there -> \"q\" café ♪\n\n" "srt"
        }
        test "tsv" { Expect.equal (Writers.tsv transcript) "start\tend\ttext\n0\t2500\tHello world.\n62345\t3725000\tTab here --> \"q\" café ♪\n" "tsv" }
        test "json" {
            let expected =
                "{\"text\": \" Hello world. Tab\\there --> \\\"q\\\" caf\\u00e9 \\u266a\", \"segments\": [{\"id\": 0, \"seek\": 0, \"start\": 0.0, \"end\": 2.5, \"text\": \" Hello world.\", \"tokens\": [50364, 2425, 1002, 13, 50489], \"temperature\": 0.0, \"avg_logprob\": -0.25, \"compression_ratio\": 0.8666666666666667, \"no_speech_prob\": 0.012}, {\"id\": 1, \"seek\": 3000, \"start\": 62.345, \"end\": 3725.0, \"text\": \" Tab\\there --> \\\"q\\\" caf\\u00e9 \\u266a\", \"tokens\": [50364, 50414], \"temperature\": 0.6000000000000001, \"avg_logprob\": -1.5e-05, \"compression_ratio\": 1.0, \"no_speech_prob\": 1e-07}], \"language\": \"en\"}"
            Expect.equal (Writers.json transcript) expected "json"
        }
        test "floats are written as Python's repr" {
            let cases =
                [ 0.0, "0.0"; 2.5, "2.5"; 1e-7, "1e-07"; -1.5e-05, "-1.5e-05"; 0.6000000000000001, "0.6000000000000001"; 1e16, "1e+16"
                  123456789012345678.0, "1.2345678901234568e+17"; 1e15, "1000000000000000.0"; 0.0001, "0.0001"; 0.00001234, "1.234e-05"
                  -3.0, "-3.0"; 1.7976931348623157e308, "1.7976931348623157e+308"; 5e-324, "5e-324"; nan, "NaN" ]
            for x, s in cases do Expect.equal (Writers.pythonFloat x) s $"{x}"
        }
        test "output files are named after the audio file" {
            Expect.equal (Writers.outputPath "out" "/data/talk.v2.flac" Srt) (Path.Combine("out", "talk.v2.srt")) "srt path"
            Expect.equal (Writers.parseFormat "all") [ Txt; Vtt; Srt; Tsv; Json ] "all"
        }
        test "temperature schedule as numpy's arange" {
            Expect.equal (TranscribeOptions.temperatureSchedule 0.0 (Some 0.2)) [ 0.0; 0.2; 0.4; 0.6000000000000001; 0.8; 1.0 ] "0 … 1 by 0.2"
            Expect.equal (TranscribeOptions.temperatureSchedule 0.5 None) [ 0.5 ] "no increment"
        }
    ]

[<Tests>]
let tests =
    testSequenced
    <| testList "decoding" [ tsRulesTests; searchTests; fallbackTests; longFormTests; writerTests ]
