module MagnetWhisper.Tests.AtomicWriteTests

// Every persisting writer goes through AtomicWrite: a failure injected at the last moment before the commit (and one
// raised by the content writer itself) must leave the previous content byte-identical and no temporary behind.

open System
open System.IO
open Expecto
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Whisper.WhisperReference

/// Every file below dir with its bytes, by relative path.
let private snapshot (dir: string) =
    [ for f in Directory.GetFiles(dir, "*", SearchOption.AllDirectories) |> Array.sort ->
          Path.GetRelativePath(dir, f), File.ReadAllBytes f ]

/// Hidden temporaries (".name.GUID.tmp/.staging/.old") left in a folder.
let private temporaries (dir: string) =
    Directory.GetFileSystemEntries dir |> Array.filter (fun e -> (Path.GetFileName e).StartsWith ".")

let private failing () = AtomicWrite.Faults.inject (fun _ -> failwith "injected failure")

let private expectInjected (write: unit -> unit) =
    let e = Expect.throwsC write id
    Expect.stringContains e.Message "injected failure" "the injected failure propagates"

[<Tests>]
let tests =
    testSequenced
    <| testList "atomic write" [
        test "a file write that fails before the commit keeps the old content" {
            use tmp = new TempDir()
            let path = tmp.Sub "a.txt"
            AtomicWrite.text path "old"
            expectInjected (fun () ->
                use _ = failing ()
                AtomicWrite.text path "new")
            Expect.equal (File.ReadAllText path) "old" "old content"
            let e = Expect.throwsC (fun () -> AtomicWrite.file path (fun s -> s.WriteByte 1uy; failwith "writer broke")) id
            Expect.stringContains e.Message "writer broke" "the writer's failure propagates"
            Expect.equal (File.ReadAllText path) "old" "old content after a writer failure"
            Expect.isEmpty (temporaries tmp.Path) "no temporary file left"
            AtomicWrite.text path "new"
            Expect.equal (File.ReadAllText path) "new" "replaced"
        }

        test "the injected fault is scoped: after disposal writes commit again" {
            use tmp = new TempDir()
            let path = tmp.Sub "b.txt"
            do
                use _ = failing ()
                ()
            AtomicWrite.text path "x"
            Expect.equal (File.ReadAllText path) "x" "committed"
        }

        test "a folder write that fails keeps every file of the old folder" {
            use tmp = new TempDir()
            let dir = tmp.Sub "f"
            AtomicWrite.folder dir (fun _ -> true) (fun staging -> File.WriteAllText(Path.Combine(staging, "one"), "1"))
            File.WriteAllText(Path.Combine(dir, "extra"), "kept")
            let before = snapshot dir
            expectInjected (fun () ->
                use _ = failing ()
                AtomicWrite.folder dir (fun _ -> true) (fun staging -> File.WriteAllText(Path.Combine(staging, "one"), "2")))
            Expect.equal (snapshot dir) before "old folder intact"
            Expect.isEmpty (temporaries tmp.Path) "no staging folder left"
            AtomicWrite.folder dir (fun name -> name = "extra") (fun staging -> File.WriteAllText(Path.Combine(staging, "one"), "2"))
            Expect.equal (File.ReadAllText(Path.Combine(dir, "one"))) "2" "replaced"
            Expect.equal (File.ReadAllText(Path.Combine(dir, "extra"))) "kept" "carried over"
            Expect.isEmpty (temporaries tmp.Path) "no backup left"
        }

        test "Whisper's folder save is atomic: an injected failure leaves the previous checkpoint byte-identical" {
            use _ = torch.NewDisposeScope()
            use tmp = new TempDir()
            let dir = tmp.Sub "whisper"
            torch.manual_seed 3L |> ignore
            use a = new WhisperModel(tinyConfig)
            use b = new WhisperModel(tinyConfig)
            a.Save dir
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{}")
            let before = snapshot dir
            expectInjected (fun () ->
                use _ = failing ()
                b.Save dir)
            Expect.equal (snapshot dir) before "the old checkpoint is untouched (before, files were moved one at a time)"
            let e = Expect.throwsC (fun () -> b.Save(dir, { SaveOptions.Default with MaxShardBytes = Some 0L })) id
            Expect.stringContains e.Message "MaxShardBytes" "a failure inside the weight writer"
            Expect.equal (snapshot dir) before "still untouched"
            Expect.isEmpty (temporaries tmp.Path) "no temporaries left"
        }

        test ".npy output is atomic" {
            use _ = torch.NewDisposeScope()
            use tmp = new TempDir()
            let path = tmp.Sub "x.npy"
            Npy.write path (torch.arange(6, dtype = torch.float32))
            let before = File.ReadAllBytes path
            expectInjected (fun () ->
                use _ = failing ()
                Npy.write path (torch.zeros(3L)))
            Expect.equal (File.ReadAllBytes path) before "the old array is intact"
            Expect.isEmpty (temporaries tmp.Path) "no temporary left"
        }
    ]
