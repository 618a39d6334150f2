/// Test support for MagnetWhisper: a tiny configuration, random Whisper checkpoints, padded batches, and a minimal
/// writer of PyTorch's zip-pickle format (protocol 2, as `torch.save` writes it) to build original-project files.
module MagnetWhisper.Tests.Magnet.MagnetFixtures

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Core.Magnet
open MagnetWhisper.Tests.Whisper.WhisperReference

type Tensor = torch.Tensor

/// d_model 32, 4 heads, 3 encoder and 2 decoder layers, 48 mel frames (24 encoder positions), vocabulary 97.
let config =
    { tinyConfig with
        EncoderLayers = 3
        DecoderLayers = 2
        MaxSourcePositions = 24
        MaxTargetPositions = 24 }

/// A random Whisper model of a configuration with every parameter perturbed (see WhisperReference.randomModel).
let whisper (seed: int64) (c: WhisperConfig) = randomModel seed c

/// A converted model (eval mode) from a random Whisper.
let magnet (seed: int64) (c: WhisperConfig) (options: MagnetOptions) : MagnetWhisperModel =
    use w = whisper seed c
    let m = MagnetWhisperModel.FromWhisper(w, options)
    m.eval()
    m

/// Options with one default predictor.
let withPredictor (layer: int) (kind: PredictorKind) (prior: float) = MagnetOptions.Default.WithPredictor(layer, kind, prior)

/// A (B, F) 0/1 frame mask with the given valid frame counts.
let frameMask (frames: int64) (lengths: int64[]) : Tensor =
    let positions = torch.arange(frames, dtype = torch.int64).unsqueeze(0L)
    positions.lt(torch.tensor(lengths).unsqueeze(1L)).to_type(torch.float32)

/// Random log-mel (B, M, F) whose frames past each row's length are replaced by garbage.
let paddedMel (seed: int64) (c: WhisperConfig) (lengths: int64[]) : Tensor * Tensor =
    let mel = randomMel seed c (int64 lengths.Length)
    let frames = int64 c.InputFrames
    let mask = frameMask frames lengths
    let garbage = torch.randn_like(mel) * 30.0
    torch.where(mask.unsqueeze(1L).gt((0.0).ToScalar()), mel, garbage), mask

/// Forces a BP1's boundary rate: scorer weights zero and final bias logit(rate), so p = rate on every frame.
let forceRate (model: MagnetWhisperModel) (layer: int) (rate: float) =
    use _ = torch.no_grad()
    for n, p in model.State do
        let prefix = $"model.encoder.boundary_predictors.{layer}.boundary_mlp."
        if n.StartsWith prefix then
            if n = prefix + "2.bias" then p.fill_(Math.Log(rate / (1.0 - rate))) |> ignore
            elif n.EndsWith ".weight" then p.zero_() |> ignore

/// The named state tensor of a model.
let stateTensor (model: MagnetWhisperModel) (name: string) : Tensor =
    model.State |> List.find (fst >> (=) name) |> snd

/// A temporary folder deleted on dispose.
type Temp() =
    let path = Path.Combine(Path.GetTempPath(), "mw-magnet-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.Sub(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() = if Directory.Exists path then Directory.Delete(path, true)

/// Python values for the test pickler.
type Py =
    | None'
    | Bool' of bool
    | Int' of int64
    | Float' of float
    | Str' of string
    | Tuple' of Py list
    | List' of Py list
    | Dict' of (Py * Py) list
    /// collections.OrderedDict (what state_dict returns).
    | OrderedDict' of (Py * Py) list
    /// A tensor: written as a storage (persistent id) plus `_rebuild_tensor_v2`.
    | Tensor' of Tensor
    /// A strided view (offset, size, stride) of the storage holding a contiguous tensor's elements.
    | View' of storage: Tensor * offset: int64 * size: int64 list * stride: int64 list

/// A minimal `torch.save` writer: protocol 2 pickle (PROTO, EMPTY_DICT/LIST/TUPLE, MARK, BINUNICODE, BININT*, LONG1,
/// BINFLOAT, TUPLE1-3/TUPLE, APPENDS, SETITEMS, GLOBAL, REDUCE, BINPERSID, BINPUT, NONE, NEWTRUE/NEWFALSE, STOP)
/// in a zip with `<archive>/data.pkl`, `<archive>/data/<key>`, `<archive>/byteorder`, `<archive>/version`.
module TorchWriter =
    let private storageName (dtype: torch.ScalarType) =
        match dtype with
        | torch.ScalarType.Float32 -> "FloatStorage"
        | torch.ScalarType.Float64 -> "DoubleStorage"
        | torch.ScalarType.Float16 -> "HalfStorage"
        | torch.ScalarType.BFloat16 -> "BFloat16Storage"
        | torch.ScalarType.Int64 -> "LongStorage"
        | torch.ScalarType.Int32 -> "IntStorage"
        | torch.ScalarType.Bool -> "BoolStorage"
        | torch.ScalarType.Byte -> "ByteStorage"
        | other -> failwith $"no storage name for {other}"

    /// The pickle bytes of a value and the storages it refers to (key, raw little-endian bytes).
    let pickle (value: Py) : byte[] * (string * byte[]) list =
        use out = new MemoryStream()
        let storages = ResizeArray<string * byte[]>()
        let mutable memo = 0
        let b (x: byte) = out.WriteByte x
        let raw (xs: byte[]) = out.Write(xs, 0, xs.Length)
        let put () =
            // BINPUT as CPython does after every container / global it may refer to again.
            if memo < 256 then
                b 'q'B
                b (byte memo)
            else
                b 'r'B
                let buf = Array.zeroCreate<byte> 4
                BinaryPrimitives.WriteInt32LittleEndian(Span buf, memo)
                raw buf
            memo <- memo + 1
        let str (s: string) =
            let bytes = Encoding.UTF8.GetBytes s
            b 'X'B
            let len = Array.zeroCreate<byte> 4
            BinaryPrimitives.WriteInt32LittleEndian(Span len, bytes.Length)
            raw len
            raw bytes
            put ()
        let glob (m: string) (n: string) =
            b 'c'B
            raw (Encoding.ASCII.GetBytes(m + "\n" + n + "\n"))
            put ()
        let int (i: int64) =
            if i >= 0L && i < 256L then
                b 'K'B
                b (byte i)
            elif i >= 0L && i < 65536L then
                b 'M'B
                let buf = Array.zeroCreate<byte> 2
                BinaryPrimitives.WriteUInt16LittleEndian(Span buf, uint16 i)
                raw buf
            elif i >= int64 Int32.MinValue && i <= int64 Int32.MaxValue then
                b 'J'B
                let buf = Array.zeroCreate<byte> 4
                BinaryPrimitives.WriteInt32LittleEndian(Span buf, int32 i)
                raw buf
            else
                b 0x8auy
                b 8uy
                let buf = Array.zeroCreate<byte> 8
                BinaryPrimitives.WriteInt64LittleEndian(Span buf, i)
                raw buf
        let rec write (v: Py) =
            match v with
            | None' -> b 'N'B
            | Bool' true -> b 0x88uy
            | Bool' false -> b 0x89uy
            | Int' i -> int i
            | Float' f ->
                b 'G'B
                let buf = Array.zeroCreate<byte> 8
                BinaryPrimitives.WriteDoubleBigEndian(Span buf, f)
                raw buf
            | Str' s -> str s
            | Tuple' [] -> b ')'B
            | Tuple' [ x ] ->
                write x
                b 0x85uy
            | Tuple' [ x; y ] ->
                write x
                write y
                b 0x86uy
            | Tuple' [ x; y; z ] ->
                write x
                write y
                write z
                b 0x87uy
            | Tuple' xs ->
                b '('B
                for x in xs do write x
                b 't'B
            | List' xs ->
                b ']'B
                put ()
                if not xs.IsEmpty then
                    b '('B
                    for x in xs do write x
                    b 'e'B
            | Dict' items ->
                b '}'B
                put ()
                if not items.IsEmpty then
                    b '('B
                    for k, x in items do
                        write k
                        write x
                    b 'u'B
            | OrderedDict' items ->
                glob "collections" "OrderedDict"
                b ')'B
                b 'R'B
                put ()
                if not items.IsEmpty then
                    b '('B
                    for k, x in items do
                        write k
                        write x
                    b 'u'B
            | Tensor' t ->
                let c = t.detach().cpu().contiguous()
                write (View'(c, 0L, List.ofArray c.shape, List.ofArray (c.stride())))
            | View'(t, offset, size, stride) ->
                let c = t.detach().cpu().contiguous()
                let key = string storages.Count
                storages.Add((key, c.bytes.ToArray()))
                glob "torch._utils" "_rebuild_tensor_v2"
                b '('B
                // persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
                b '('B
                str "storage"
                glob "torch" (storageName c.dtype)
                str key
                str "cpu"
                int (c.numel())
                b 't'B
                b 'Q'B
                int offset
                write (Tuple' [ for s in size -> Int' s ])
                write (Tuple' [ for s in stride -> Int' s ])
                b 0x89uy
                write (OrderedDict' [])
                b 't'B
                b 'R'B
                put ()
        b 0x80uy
        b 2uy
        write value
        b '.'B
        out.ToArray(), List.ofSeq storages

    /// Writes value as a torch.save zip archive whose records live under archive/ (the name torch uses for streams;
    /// files get their stem).
    let save (path: string) (value: Py) =
        let data, storages = pickle value
        let stem = Path.GetFileNameWithoutExtension path
        use zip = new ZipArchive(File.Create path, ZipArchiveMode.Create)
        let entry (name: string) (bytes: byte[]) =
            let e = zip.CreateEntry($"{stem}/{name}", CompressionLevel.NoCompression)
            use s = e.Open()
            s.Write(bytes, 0, bytes.Length)
        entry "data.pkl" data
        entry "byteorder" (Encoding.ASCII.GetBytes "little")
        for key, bytes in storages do
            entry $"data/{key}" bytes
        entry "version" (Encoding.ASCII.GetBytes "3\n")

    /// A state dict (OrderedDict of name → tensor) of named tensors.
    let stateDict (tensors: (string * Tensor) seq) = OrderedDict' [ for n, t in tensors -> Str' n, Tensor' t ]
