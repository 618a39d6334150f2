namespace MagnetWhisper.Core.Synthesis

open System
open System.IO
open System.Text
open System.Text.Json
open System.Threading
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data

/// How the synthetic corpus stores its audio (always 16 kHz mono).
type SynthAudioFormat =
    /// 16-bit PCM WAV, written in-process.
    | Wav
    /// MP3 encoded by the ffmpeg at this path (libmp3lame, constant bit rate in kbit/s); decoded in-process when read.
    | Mp3 of ffmpeg: string * kbps: int

/// What `magnet corpus synth` makes.
type SynthesisOptions =
    { /// How many utterances (all splits together).
      Utterances: int
      /// Every sentence, voice, rate and pitch follows from the seed and the utterance's index.
      Seed: int64
      /// The engines to use; the ones not installed are skipped with a note.
      Engines: Engine list
      /// Utterances synthesised at the same time (one engine process each).
      Workers: int
      Format: SynthAudioFormat
      /// Finds an engine's command (PATH by default); None means not installed.
      Locate: string -> string option }

    /// 100 utterances, seed 0, every engine, one worker per core, WAV, engines found on PATH.
    static member Default =
        { Utterances = 100; Seed = 0L; Engines = Engine.all; Workers = Environment.ProcessorCount; Format = Wav
          Locate = Engines.findOnPath }

/// One utterance as planned: a function of the seed, its index and the voices available.
type PlannedUtterance =
    { Index: int
      Id: string
      /// train, dev, test or test-unseen-voice.
      Split: string
      Text: string
      Delivery: Delivery }

/// What a synthesis run did.
type SynthesisReport =
    { /// The JSONL manifest written (Corpora.read reads it).
      Manifest: string
      /// Engines found and skipped, voices that failed their trial, the held-out voice: one line each.
      Notes: string list
      /// Utterances that could not be synthesised (left out of the manifest), with the reason.
      Failed: Skipped[] }

module SynthCorpus =
    /// The manifest's file name inside the output folder.
    [<Literal>]
    let ManifestName = "manifest.jsonl"

    /// The manifest of a corpus argument: a folder holding manifest.jsonl means that manifest; anything else (a
    /// manifest, another corpus format, a missing path) is returned as given, for the caller's reader to judge.
    let manifestOf (corpus: string) : string =
        let manifest = Path.Combine(corpus, ManifestName)
        if Directory.Exists corpus && File.Exists manifest then manifest else corpus

    /// The split names. The sentences of train, dev and test are disjoint; test-unseen-voice speaks test sentences
    /// with the one voice train and dev never hear.
    let splits = [ "train"; "dev"; "test"; "test-unseen-voice" ]

    /// The split of utterance i: a fixed cycle of ten (7 train, 1 dev, 1 test, 1 test-unseen-voice) that puts one
    /// of each in the first four, so even a tiny corpus has every split.
    let splitOfIndex (index: int) : string =
        match index % 10 with
        | 1 -> "dev"
        | 2 -> "test"
        | 3 -> "test-unseen-voice"
        | _ -> "train"

    /// The utterances: sentence from the seed and index alone (drawn from the split's sentences), voice, rate and
    /// pitch from a second stream of the same two. `seen` speak train/dev/test; `unseen` speaks test-unseen-voice
    /// (without one, those utterances go to test).
    let plan (seed: int64) (count: int) (seen: Voice list) (unseen: Voice option) : PlannedUtterance[] =
        if seen.IsEmpty then invalidArg (nameof seen) "needs at least one voice"
        Array.init count (fun i ->
            let split =
                match splitOfIndex i, unseen with
                | "test-unseen-voice", None -> "test"
                | s, _ -> s
            let sentenceSplit =
                match split with
                | "dev" -> Sentences.Dev
                | "test" | "test-unseen-voice" -> Sentences.Test
                | _ -> Sentences.Train
            let voices = if split = "test-unseen-voice" then [ unseen.Value ] else seen
            { Index = i
              Id = $"synth-{i:D6}"
              Split = split
              Text = Sentences.sentenceFor seed i sentenceSplit
              Delivery = Voices.deliver (Sentences.generator seed 1 i) voices })

    /// The engines that are installed (with their command's path) and a note for each one that is not.
    let locate (locateCommand: string -> string option) (engines: Engine list) : (Engine * string) list * string list =
        let found = engines |> List.choose (fun e -> locateCommand (Engine.command e) |> Option.map (fun p -> e, p))
        let notes =
            [ for e in engines do
                  match found |> List.tryFind (fst >> (=) e) with
                  | Some(_, path) -> $"{Engine.command e}: found at {path}"
                  | None -> $"{Engine.command e}: not installed ({Engine.command e} is not on PATH), skipped" ]
        found, notes

    /// One manifest line; paths relative to the manifest, with forward slashes.
    let private manifestLine (u: PlannedUtterance) (audio: string) (phones: string option) (duration: float) : string =
        use buffer = new MemoryStream()
        (
            use w = new Utf8JsonWriter(buffer, JsonWriterOptions(Encoder = Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping))
            w.WriteStartObject()
            w.WriteString("audio", audio)
            w.WriteString("text", u.Text)
            w.WriteNumber("duration", Math.Round(duration, 5))
            w.WriteString("speaker", u.Delivery.Voice.Speaker)
            w.WriteString("id", u.Id)
            w.WriteString("split", u.Split)
            w.WriteString("engine", Engine.command u.Delivery.Voice.Engine)
            w.WriteNumber("rate", u.Delivery.Rate)
            w.WriteNumber("pitch", u.Delivery.Pitch)
            phones |> Option.iter (fun p -> w.WriteString("phones", p))
            w.WriteEndObject()
        )
        Encoding.UTF8.GetString(buffer.ToArray())

    /// The samples stored in the chosen format under `path`; returns the duration as a reader decodes the file.
    let private store (format: SynthAudioFormat) (path: string) (samples: float32[]) : float =
        match format with
        | Wav ->
            AtomicWrite.file path (fun s -> WavWriter.writeMono16 s LogMel.SampleRate samples)
            float samples.Length / float LogMel.SampleRate
        | Mp3(ffmpeg, kbps) ->
            let work = Path.Combine(Path.GetTempPath(), $"magnet-synth-mp3-{Guid.NewGuid():N}")
            Directory.CreateDirectory work |> ignore
            try
                let wav = Path.Combine(work, "in.wav")
                let mp3 = Path.Combine(work, "out.mp3")
                using (File.Create wav) (fun s -> WavWriter.writeMono16 s LogMel.SampleRate samples)
                Engines.run ffmpeg [ "-hide_banner"; "-loglevel"; "error"; "-nostdin"; "-i"; wav; "-c:a"; "libmp3lame"; "-b:a"; $"{kbps}k"; "-y"; mp3 ]
                let bytes = File.ReadAllBytes mp3
                AtomicWrite.file path (fun s -> s.Write(bytes, 0, bytes.Length))
                // The encoder pads the start and end: the duration is what the in-process decoder gives back.
                float (Audio.loadUsing None path).Length / float LogMel.SampleRate
            finally
                try Directory.Delete(work, true) with _ -> ()

    /// Synthesises one planned utterance into `output`/SPLIT/ID.wav|mp3 (and ID.phones from festival); returns its
    /// manifest line, or why it failed.
    let private synthesiseOne (output: string) (format: SynthAudioFormat) (commands: Map<Engine, string>) (u: PlannedUtterance) : Result<string, Skipped> =
        let extension = match format with Wav -> "wav" | Mp3 _ -> "mp3"
        let relative = $"{u.Split}/{u.Id}.{extension}"
        try
            let spoken = Engines.speak commands.[u.Delivery.Voice.Engine] u.Delivery u.Text
            if spoken.Samples.Length = 0 then failwith $"{u.Delivery.Voice.Speaker} produced no samples"
            Directory.CreateDirectory(Path.Combine(output, u.Split)) |> ignore
            let duration = store format (Path.Combine(output, relative)) spoken.Samples
            let phones =
                spoken.Phones
                |> Option.map (fun phones ->
                    let name = $"{u.Split}/{u.Id}.phones"
                    let lines = phones |> List.map (fun p -> p.End.ToString("0.0000", Globalization.CultureInfo.InvariantCulture) + " " + p.Label)
                    AtomicWrite.text (Path.Combine(output, name)) (String.Join("\n", lines) + "\n")
                    name)
            Ok(manifestLine u relative phones duration)
        with e ->
            Error { Source = $"{u.Id} ({u.Delivery.Voice.Speaker}: \"{u.Text}\")"; Reason = e.Message }

    /// Tries each voice of the installed engines on one word; the voices that fail (e.g. a festival voice package
    /// that is not installed) are left out with a note.
    let private tryVoices (workers: int) (cancel: CancellationToken) (commands: Map<Engine, string>) : Voice list * string list =
        let voices = Voices.catalogue |> List.filter (fun v -> commands.ContainsKey v.Engine)
        let trial (_: CancellationToken) (v: Voice) =
            let d = { Voice = v; Rate = 1.0; Pitch = (fst v.Pitch + snd v.Pitch) / 2.0 }
            try
                Engines.speak commands.[v.Engine] d "yes" |> ignore
                Ok v
            with e -> Error $"{v.Speaker}: unusable ({e.Message}), skipped"
        let results = voices |> Prefetch.ordered workers (2 * workers) cancel trial |> List.ofSeq
        (results |> List.choose (function Ok v -> Some v | Error _ -> None)),
        (results |> List.choose (function Error m -> Some m | Ok _ -> None))

    /// Synthesises the corpus into `output`: audio per split folder, festival's alignments beside it as ID.phones
    /// (`end_time phone` lines), and the JSONL manifest last (an old one is removed first), so a crash never leaves a
    /// manifest naming missing audio. The output is the same for any worker count. `log` gets the notes and
    /// progress as they happen. No installed engine or voice raises InvalidOperationException.
    let synthesise (options: SynthesisOptions) (output: string) (log: string -> unit) (cancel: CancellationToken) : SynthesisReport =
        if options.Utterances < 1 then invalidArg "utterances" $"--utterances must be positive, got {options.Utterances}"
        if options.Workers < 1 then invalidArg "workers" $"--workers must be positive, got {options.Workers}"
        let found, engineNotes = locate options.Locate options.Engines
        engineNotes |> List.iter log
        if found.IsEmpty then
            raise (InvalidOperationException(
                "no speech engine is installed: install espeak-ng, festival (with festvox-kallpc16k or festvox-us-slt-hts) or flite"))
        let commands = Map.ofList found
        let voices, voiceNotes = tryVoices options.Workers cancel commands
        voiceNotes |> List.iter log
        if voices.IsEmpty then raise (InvalidOperationException "none of the installed engines' voices works (see the notes above)")
        let seen, unseen = Voices.holdOut voices
        let unseenNote =
            match unseen with
            | Some v -> $"test-unseen-voice: spoken by {v.Speaker}, which train, dev and test never hear"
            | None -> $"test-unseen-voice: left out (only {voices.Head.Speaker} is available, nothing to hold out)"
        log unseenNote
        Directory.CreateDirectory output |> ignore
        let manifest = Path.Combine(output, ManifestName)
        if File.Exists manifest then File.Delete manifest
        let planned = plan options.Seed options.Utterances seen unseen
        let lines = ResizeArray<string>()
        let failed = ResizeArray<Skipped>()
        planned
        |> Prefetch.ordered options.Workers (2 * options.Workers) cancel (fun _ u -> synthesiseOne output options.Format commands u)
        |> Seq.iteri (fun i result ->
            match result with
            | Ok line -> lines.Add line
            | Error s ->
                failed.Add s
                log $"failed: {s.Source}: {s.Reason}"
            if (i + 1) % 50 = 0 || i + 1 = planned.Length then log $"synthesised {i + 1}/{planned.Length}")
        AtomicWrite.text manifest (String.Join("\n", lines) + "\n")
        { Manifest = manifest
          Notes = engineNotes @ voiceNotes @ [ $"voices: {voices.Length} ({seen.Length} for train/dev/test)"; unseenNote ]
          Failed = failed.ToArray() }
