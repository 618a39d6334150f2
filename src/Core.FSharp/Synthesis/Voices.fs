namespace MagnetWhisper.Core.Synthesis

/// A speech synthesiser that Debian packages.
type Engine =
    | EspeakNg
    | Festival
    | Flite

module Engine =
    /// Every engine, in the order voices are listed.
    let all = [ EspeakNg; Festival; Flite ]

    /// The engine's command (also its name on the command line).
    let command (engine: Engine) : string =
        match engine with
        | EspeakNg -> "espeak-ng"
        | Festival -> "festival"
        | Flite -> "flite"

    /// The engine a command-line name names, or an error listing the names.
    let parse (name: string) : Result<Engine, string> =
        match all |> List.tryFind (fun e -> command e = name.Trim().ToLowerInvariant()) with
        | Some e -> Ok e
        | None ->
            let names = all |> List.map command |> String.concat ", "
            Error $"'{name}' is not an engine; the engines are {names}"

/// One voice of an engine and the natural range of its pitch, in the engine's own unit.
type Voice =
    { Engine: Engine
      /// The engine's name of the voice: espeak-ng `en-us+f3`, festival `cmu_us_slt_arctic_hts`, flite `awb`.
      Name: string
      /// Pitch drawn uniformly in this range: espeak-ng `-p` (0–99, 50 normal); flite `int_f0_target_mean` and
      /// festival diphone `target_f0_mean` in Hz; festival HTS `-fm` in half-tones.
      Pitch: float * float }

    /// The speaker name in the corpus: engine and voice ("flite-awb").
    member v.Speaker = $"{Engine.command v.Engine}-{v.Name}"

/// How one utterance is spoken.
type Delivery =
    { Voice: Voice
      /// Speaking rate relative to the voice's normal one (1.2 = 20 % faster).
      Rate: float
      /// In the voice's pitch unit (see Voice.Pitch).
      Pitch: float }

module Voices =
    /// Speaking rates drawn uniformly in this range: natural variation around each voice's normal rate.
    let rateRange = 0.85, 1.2

    /// The voices, by engine: espeak-ng's English accents with male and female variants, festival's two Debian
    /// voices, flite's four built-in voices.
    let catalogue : Voice list =
        [ for accent in [ "en-us"; "en-gb"; "en-gb-scotland"; "en-029" ] do
              for variant in [ "m3"; "f3"; "m7"; "f5" ] do
                  { Engine = EspeakNg; Name = $"{accent}+{variant}"; Pitch = (35.0, 65.0) }
          { Engine = Festival; Name = "kal_diphone"; Pitch = (95.0, 125.0) }
          { Engine = Festival; Name = "cmu_us_slt_arctic_hts"; Pitch = (-2.0, 2.0) }
          { Engine = Flite; Name = "kal"; Pitch = (95.0, 125.0) }
          { Engine = Flite; Name = "awb"; Pitch = (90.0, 120.0) }
          { Engine = Flite; Name = "rms"; Pitch = (85.0, 115.0) }
          { Engine = Flite; Name = "slt"; Pitch = (160.0, 190.0) } ]

    /// The voices of `test-unseen-voice` by preference: speakers no other voice imitates (flite's awb is the only
    /// Scottish recording; flite's kal and slt are the speakers of festival's two voices).
    let private unseenPreference = [ "flite-awb"; "flite-rms"; "espeak-ng-en-gb-scotland+m7" ]

    /// Splits the available voices into the ones train/dev/test hear and the held-out voice of test-unseen-voice:
    /// the first of the preference that is available, else the last available voice. None when fewer than two
    /// voices are available (then there is nothing to hold out).
    let holdOut (available: Voice list) : Voice list * Voice option =
        if available.Length < 2 then available, None
        else
            let unseen =
                unseenPreference
                |> List.tryPick (fun s -> available |> List.tryFind (fun v -> v.Speaker = s))
                |> Option.defaultValue (List.last available)
            available |> List.filter ((<>) unseen), Some unseen

    /// A uniform draw in [lo, hi] from the generator, rounded to 3 decimals (the engines read decimal text).
    let private uniform (rng: MagnetWhisper.Core.Data.SplitMix64) (lo: float, hi: float) =
        let u = float (rng.Next() >>> 11) / 9007199254740992.0
        System.Math.Round(lo + (hi - lo) * u, 3)

    /// A voice from `voices` and a rate and pitch within their natural ranges. The engine is drawn first, uniformly
    /// among the engines of `voices`, then one of its voices: espeak-ng's sixteen voices would otherwise drown out
    /// festival's two (the only ones with phone alignments).
    let deliver (rng: MagnetWhisper.Core.Data.SplitMix64) (voices: Voice list) : Delivery =
        if voices.IsEmpty then invalidArg (nameof voices) "needs at least one voice"
        let engines = voices |> List.map (fun v -> v.Engine) |> List.distinct
        let engine = engines.[rng.Below engines.Length]
        let ofEngine = voices |> List.filter (fun v -> v.Engine = engine)
        let voice = ofEngine.[rng.Below ofEngine.Length]
        { Voice = voice; Rate = uniform rng rateRange; Pitch = uniform rng voice.Pitch }
