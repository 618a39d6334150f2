/// The one way this project persists anything (checkpoint folders, MagnetWhisper folders, .npy files, trainer
/// checkpoints): write everything to a temporary sibling, flush it to disk, then rename it into place. A failure at
/// any point before the rename leaves the previous content exactly as it was, and no half-written file or folder is
/// ever visible under the target name.
module MagnetWhisper.Core.AtomicWrite

open System
open System.IO
open System.Threading

/// Fault injection for tests: a hook that runs on the complete staged file or folder just before it is renamed into
/// place. It is carried by the current async flow (AsyncLocal), so a test that sets it affects only its own writes.
module Faults =
    let private hook = AsyncLocal<(string -> unit) option>()

    /// The hook in force, if any.
    let internal current () = hook.Value

    /// Runs `beforeCommit staged` before every commit of this async flow until the returned object is disposed
    /// (tests throw from it to simulate a crash at the worst moment).
    let inject (beforeCommit: string -> unit) : IDisposable =
        let previous = hook.Value
        hook.Value <- Some beforeCommit
        { new IDisposable with
            member _.Dispose() = hook.Value <- previous }

let private fullPath (path: string) = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar)

let private siblingName (full: string) (suffix: string) =
    let parent = Path.GetDirectoryName full
    Path.Combine(parent, $".{Path.GetFileName full}.{Guid.NewGuid():N}.{suffix}")

/// Flushes a written file's data to the storage device (fsync), so a rename never publishes data still in caches.
let private syncFile (path: string) =
    use fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite)
    fs.Flush(true)

let private commitHook (staged: string) =
    match Faults.current () with
    | Some f -> f staged
    | None -> ()

/// Writes a file atomically: `write` fills a stream on a temporary sibling, which is flushed to disk and renamed
/// over path. An existing file keeps its old content if anything fails. A folder at path is an error.
let file (path: string) (write: Stream -> unit) : unit =
    let full = fullPath path
    if Directory.Exists full then raise (IOException $"cannot write {path}: it is a folder")
    Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
    let temp = siblingName full "tmp"
    try
        do
            use fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write)
            write fs
            fs.Flush(true)
        commitHook temp
        File.Move(temp, full, true)
    with _ ->
        if File.Exists temp then File.Delete temp
        reraise ()

/// Writes a text file atomically (UTF-8, no byte-order mark).
let text (path: string) (content: string) : unit =
    file path (fun s ->
        let bytes = Text.UTF8Encoding(false).GetBytes content
        s.Write(bytes, 0, bytes.Length))

/// Writes a folder atomically. `write` fills a fresh staging folder (a sibling of dir); its files are flushed to disk,
/// then the folder is renamed into place. An existing folder is renamed aside first and renamed back if the swap
/// fails; afterwards the entries of the old folder for which `carryOver name` holds and that the new folder lacks
/// (e.g. a tokenizer beside a checkpoint) are moved into the new one, and the old folder is deleted. A failure before
/// the swap leaves the existing folder untouched. A file at dir is an error.
let folder (dir: string) (carryOver: string -> bool) (write: string -> unit) : unit =
    let full = fullPath dir
    if File.Exists full then raise (IOException $"cannot save to {dir}: a file of that name exists")
    Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
    let staging = siblingName full "staging"
    try
        Directory.CreateDirectory staging |> ignore
        write staging
        for f in Directory.GetFiles(staging, "*", SearchOption.AllDirectories) do
            syncFile f
        commitHook staging
    with _ ->
        if Directory.Exists staging then Directory.Delete(staging, true)
        reraise ()
    if not (Directory.Exists full) then Directory.Move(staging, full)
    else
        let backup = siblingName full "old"
        Directory.Move(full, backup)
        try
            Directory.Move(staging, full)
        with _ ->
            Directory.Move(backup, full)
            if Directory.Exists staging then Directory.Delete(staging, true)
            reraise ()
        try
            for entry in Directory.GetFileSystemEntries backup do
                let name = Path.GetFileName entry
                let target = Path.Combine(full, name)
                if carryOver name && not (File.Exists target || Directory.Exists target) then
                    if Directory.Exists entry then Directory.Move(entry, target) else File.Move(entry, target)
            Directory.Delete(backup, true)
        with e ->
            raise (IOException($"{dir} was saved, but files of the previous folder could not be carried over; they remain in {backup}", e))
