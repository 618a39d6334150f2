/// Running the speech engines: one process per utterance (with a timeout, its output streams drained), the audio it
/// writes read back as 16 kHz mono float32, and festival's phone segments where the engine gives them.
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Synthesis.Engines

open System
open System.Diagnostics
open System.Globalization
open System.IO
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Data

/// What one synthesis gives: 16 kHz mono samples and, from festival, every phone's end time.
type Spoken =
    { Samples: float32[]
      Phones: PhoneAlignment.Phone list option }

/// The full path of a command on PATH, if any.
let findOnPath (command: string) : string option =
    let path = Environment.GetEnvironmentVariable "PATH"
    if isNull path then None
    else
        path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
        |> Array.map (fun dir -> Path.Combine(dir, command))
        |> Array.tryFind File.Exists

/// How long one engine run may take before it is killed (festival loads its voice on every run: about a second).
let timeout = TimeSpan.FromSeconds 60.0

/// Runs a command to its end, both output streams drained (a full pipe would block it). A non-zero exit, a
/// timeout or a failure to start raises InvalidOperationException quoting the command's stderr.
let internal run (exe: string) (args: string list) : unit =
    let info = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do info.ArgumentList.Add a
    use p =
        try Process.Start info
        with e -> raise (InvalidOperationException($"{exe} could not be started: {e.Message}", e))
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit timeout) then
        (try p.Kill true with _ -> ())
        raise (InvalidOperationException $"{Path.GetFileName exe} did not finish in {timeout.TotalSeconds} s")
    p.WaitForExit()
    out.Result |> ignore
    if p.ExitCode <> 0 then
        raise (InvalidOperationException $"{Path.GetFileName exe} failed with exit code {p.ExitCode}: {err.Result.Trim()}")

let private invariant (x: float) = x.ToString("0.###", CultureInfo.InvariantCulture)

/// A Scheme string literal.
let private schemeString (s: string) = "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""

/// festival's script: choose the voice, set its rate and pitch, synthesise, save the wave and the segments.
/// kal_diphone: rate through Duration_Stretch (the voice's own is 1.1), pitch through the intonation model's target
/// mean. The HTS voice ignores Duration_Stretch: rate and pitch go to hts_engine (`-r` speed, `-fm` half-tones).
let festivalScript (d: Delivery) (text: string) (wav: string) (segs: string) : string =
    let settings =
        if d.Voice.Name.EndsWith "_hts" then
            $"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" {invariant d.Rate}) (list \"-fm\" {invariant d.Pitch}))))"
        else
            $"(Parameter.set 'Duration_Stretch {invariant (1.1 / d.Rate)})\n"
            + $"(set! int_lr_params '((target_f0_mean {invariant d.Pitch}) (target_f0_std 14) (model_f0_mean 170) (model_f0_std 34)))"
    String.concat "\n"
        [ $"(voice_{d.Voice.Name})"
          settings
          $"(set! utt1 (Utterance Text {schemeString text}))"
          "(utt.synth utt1)"
          $"(utt.save.wave utt1 {schemeString wav} 'riff)"
          $"(utt.save.segs utt1 {schemeString segs})"
          "" ]

/// Speaks `text` with the engine at `exe` into a fresh temporary folder (deleted afterwards) and reads the result
/// back as 16 kHz mono. Failures raise InvalidOperationException naming the engine and voice.
let speak (exe: string) (d: Delivery) (text: string) : Spoken =
    let work = Path.Combine(Path.GetTempPath(), $"magnet-synth-{Guid.NewGuid():N}")
    Directory.CreateDirectory work |> ignore
    try
        let wav = Path.Combine(work, "out.wav")
        let phones =
            match d.Voice.Engine with
            | EspeakNg ->
                let wordsPerMinute = int (Math.Round(175.0 * d.Rate))
                run exe [ "-v"; d.Voice.Name; "-s"; string wordsPerMinute; "-p"; string (int (Math.Round d.Pitch)); "-w"; wav; text ]
                None
            | Flite ->
                run exe [ "-voice"; d.Voice.Name; "--setf"; $"duration_stretch={invariant (1.0 / d.Rate)}"
                          "--setf"; $"int_f0_target_mean={invariant d.Pitch}"; "-t"; text; "-o"; wav ]
                None
            | Festival ->
                let segs = Path.Combine(work, "out.segs")
                let script = Path.Combine(work, "speak.scm")
                File.WriteAllText(script, festivalScript d text wav segs)
                run exe [ "-b"; script ]
                Some(PhoneAlignment.read segs)
        if not (File.Exists wav) then
            raise (InvalidOperationException $"{d.Voice.Speaker} wrote no audio for \"{text}\"")
        { Samples = Audio.loadUsing None wav; Phones = phones }
    finally
        try Directory.Delete(work, true) with _ -> ()
