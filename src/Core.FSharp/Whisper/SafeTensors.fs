namespace MagnetWhisper.Core.Whisper

#nowarn "9" // native pointers into the memory-mapped file

open System
open System.Buffers.Binary
open System.Collections.Generic
open System.IO
open System.IO.MemoryMappedFiles
open System.Text
open System.Text.Json
open Microsoft.FSharp.NativeInterop
open TorchSharp
open MagnetWhisper.Core.Tensors

/// Element types of the safetensors format.
type SafeDType =
    /// float64
    | F64
    /// float32
    | F32
    /// IEEE half
    | F16
    /// bfloat16
    | BF16
    /// int64
    | I64
    /// int32
    | I32
    /// int16
    | I16
    /// int8
    | I8
    /// uint8
    | U8
    /// bool (one byte)
    | Bool

/// One tensor entry of a safetensors header. Offsets are relative to the start of the data section.
type SafeTensorInfo =
    { /// Tensor name (the header key).
      Name: string
      /// Stored element type.
      DType: SafeDType
      /// Shape (empty for a scalar).
      Shape: int64[]
      /// First byte, relative to the data section.
      Begin: int64
      /// One past the last byte, relative to the data section.
      End: int64 }

/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}`, then the raw
/// little-endian tensor bytes (row-major, offsets relative to the end of the header).
[<RequireQualifiedAccess>]
module SafeDType =
    /// The header spelling ("F32", "BF16", "BOOL", ...).
    let name =
        function
        | F64 -> "F64"
        | F32 -> "F32"
        | F16 -> "F16"
        | BF16 -> "BF16"
        | I64 -> "I64"
        | I32 -> "I32"
        | I16 -> "I16"
        | I8 -> "I8"
        | U8 -> "U8"
        | Bool -> "BOOL"

    /// Parses a header dtype; None for dtypes this reader does not support.
    let tryParse =
        function
        | "F64" -> Some F64
        | "F32" -> Some F32
        | "F16" -> Some F16
        | "BF16" -> Some BF16
        | "I64" -> Some I64
        | "I32" -> Some I32
        | "I16" -> Some I16
        | "I8" -> Some I8
        | "U8" -> Some U8
        | "BOOL" -> Some Bool
        | _ -> None

    /// Bytes per element.
    let size =
        function
        | F64
        | I64 -> 8L
        | F32
        | I32 -> 4L
        | F16
        | BF16
        | I16 -> 2L
        | I8
        | U8
        | Bool -> 1L

    /// The TorchSharp element type.
    let toTorch =
        function
        | F64 -> torch.ScalarType.Float64
        | F32 -> torch.ScalarType.Float32
        | F16 -> torch.ScalarType.Float16
        | BF16 -> torch.ScalarType.BFloat16
        | I64 -> torch.ScalarType.Int64
        | I32 -> torch.ScalarType.Int32
        | I16 -> torch.ScalarType.Int16
        | I8 -> torch.ScalarType.Int8
        | U8 -> torch.ScalarType.Byte
        | Bool -> torch.ScalarType.Bool

    /// The safetensors element type of a TorchSharp type; fails for types the format cannot hold.
    let ofTorch (t: torch.ScalarType) =
        match t with
        | torch.ScalarType.Float64 -> F64
        | torch.ScalarType.Float32 -> F32
        | torch.ScalarType.Float16 -> F16
        | torch.ScalarType.BFloat16 -> BF16
        | torch.ScalarType.Int64 -> I64
        | torch.ScalarType.Int32 -> I32
        | torch.ScalarType.Int16 -> I16
        | torch.ScalarType.Int8 -> I8
        | torch.ScalarType.Byte -> U8
        | torch.ScalarType.Bool -> Bool
        | other -> invalidArg "dtype" $"safetensors cannot store {other} tensors"

/// A safetensors file opened read-only through a memory map: the header is parsed and checked on open, tensor
/// bytes are copied out of the map only when a tensor is loaded. Dispose to unmap the file.
[<Sealed; AllowNullLiteral>]
type SafeTensorsFile private (path: string, map: MemoryMappedFile, view: MemoryMappedViewAccessor, basePtr: nativeint,
                              dataStart: int64, infos: IReadOnlyDictionary<string, SafeTensorInfo>, names: string[],
                              metadata: Map<string, string>) =
    let mutable disposed = false

    static let corrupt (path: string) (message: string) =
        raise (InvalidDataException $"corrupt safetensors header in {path}: {message}")

    static let parseHeader (path: string) (json: string) (dataLength: int64) =
        let doc =
            try JsonDocument.Parse json
            with :? JsonException as e -> corrupt path $"invalid JSON ({e.Message})"
        use doc = doc
        let root = doc.RootElement
        if root.ValueKind <> JsonValueKind.Object then corrupt path "the header is not a JSON object"
        let mutable metadata = Map.empty
        let entries = ResizeArray<SafeTensorInfo>()
        for p in root.EnumerateObject() do
            if p.Name = "__metadata__" then
                if p.Value.ValueKind <> JsonValueKind.Object then corrupt path "__metadata__ is not an object"
                for m in p.Value.EnumerateObject() do
                    if m.Value.ValueKind <> JsonValueKind.String then
                        corrupt path $"__metadata__.{m.Name} is not a string"
                    metadata <- metadata.Add(m.Name, m.Value.GetString())
            else
                let e = p.Value
                if e.ValueKind <> JsonValueKind.Object then corrupt path $"entry '{p.Name}' is not an object"
                let field (f: string) =
                    match e.TryGetProperty f with
                    | true, v -> v
                    | _ -> corrupt path $"entry '{p.Name}' has no '{f}'"
                let dtypeText =
                    let v = field "dtype"
                    if v.ValueKind <> JsonValueKind.String then corrupt path $"entry '{p.Name}': dtype is not a string"
                    v.GetString()
                let dtype =
                    match SafeDType.tryParse dtypeText with
                    | Some d -> d
                    | None -> corrupt path $"entry '{p.Name}': unsupported dtype '{dtypeText}'"
                let ints (f: string) =
                    let v = field f
                    if v.ValueKind <> JsonValueKind.Array then corrupt path $"entry '{p.Name}': {f} is not an array"
                    [| for x in v.EnumerateArray() do
                           match x.ValueKind, x.TryGetInt64() with
                           | JsonValueKind.Number, (true, i) when i >= 0L -> i
                           | _ -> corrupt path $"entry '{p.Name}': {f} holds {x.GetRawText()}, not a non-negative integer" |]
                let shape = ints "shape"
                let offsets = ints "data_offsets"
                if offsets.Length <> 2 then corrupt path $"entry '{p.Name}': data_offsets must hold two numbers"
                let b, en = offsets.[0], offsets.[1]
                if b > en || en > dataLength then
                    corrupt path $"entry '{p.Name}': data_offsets [{b}, {en}] lie outside the data section of {dataLength} bytes"
                let expected = (Array.fold (*) 1L shape) * SafeDType.size dtype
                if en - b <> expected then
                    corrupt path $"entry '{p.Name}': {en - b} bytes for {SafeDType.name dtype} shape {showShape shape} (expected {expected})"
                entries.Add { Name = p.Name; DType = dtype; Shape = shape; Begin = b; End = en }
        let sorted = entries |> Seq.sortBy (fun e -> e.Begin, e.End) |> Array.ofSeq
        for i in 1 .. sorted.Length - 1 do
            if sorted.[i].Begin < sorted.[i - 1].End then
                corrupt path $"tensors '{sorted.[i - 1].Name}' and '{sorted.[i].Name}' overlap"
        entries, metadata

    /// Opens and checks a safetensors file. Raises FileNotFoundException for a missing file and InvalidDataException
    /// ("corrupt safetensors header in PATH: ...") for a truncated file, a bad header length, invalid JSON, unknown
    /// dtypes, offsets outside the data section, sizes that disagree with dtype × shape, or overlapping tensors.
    static member Open(path: string) : SafeTensorsFile =
        if not (BitConverter.IsLittleEndian) then raise (PlatformNotSupportedException "safetensors reading needs a little-endian CPU")
        if not (File.Exists path) then raise (FileNotFoundException($"safetensors file not found: {path}", path))
        // The length of the opened file, not FileInfo's: for a symbolic link (the Hugging Face hub cache links
        // every snapshot file to ../../blobs/HASH) FileInfo.Length is the link's own length.
        let stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)
        let length = stream.Length
        if length < 8L then
            stream.Dispose()
            corrupt path $"the file has {length} bytes, fewer than the 8-byte header length"
        let map =
            try MemoryMappedFile.CreateFromFile(stream, null, 0L, MemoryMappedFileAccess.Read, HandleInheritability.None, false)
            with _ ->
                stream.Dispose()
                reraise ()
        let mutable ok = false
        let view = map.CreateViewAccessor(0L, 0L, MemoryMappedFileAccess.Read)
        try
            let handle = view.SafeMemoryMappedViewHandle
            let mutable ptr = NativePtr.nullPtr<byte>
            handle.AcquirePointer(&ptr)
            let basePtr = NativePtr.toNativeInt ptr + nativeint view.PointerOffset
            try
                let headerLen = NativePtr.read (NativePtr.ofNativeInt<uint64> basePtr)
                let headerLen = if BitConverter.IsLittleEndian then headerLen else BinaryPrimitives.ReverseEndianness headerLen
                if headerLen > uint64 (length - 8L) then
                    corrupt path $"header length {headerLen} exceeds the {length - 8L} bytes after the length field"
                let dataStart = 8L + int64 headerLen
                let headerSpan = ReadOnlySpan<byte>(NativePtr.toVoidPtr (NativePtr.ofNativeInt<byte> (basePtr + 8n)), int headerLen)
                let json =
                    try UTF8Encoding(false, true).GetString headerSpan
                    with :? DecoderFallbackException -> corrupt path "the header is not valid UTF-8"
                let entries, metadata = parseHeader path json (length - dataStart)
                let dict = Dictionary<string, SafeTensorInfo>()
                for e in entries do dict.[e.Name] <- e
                let names = entries |> Seq.map (fun e -> e.Name) |> Array.ofSeq
                ok <- true
                new SafeTensorsFile(path, map, view, basePtr, dataStart, dict, names, metadata)
            finally
                if not ok then handle.ReleasePointer()
        finally
            if not ok then
                view.Dispose()
                map.Dispose()

    /// The file path.
    member _.Path = path
    /// Tensor names in header order.
    member _.Names: IReadOnlyList<string> = names
    /// Header entries by name.
    member _.Tensors = infos
    /// The `__metadata__` map (empty when absent).
    member _.Metadata = metadata
    /// True when the file holds a tensor of that name.
    member _.Contains(name: string) = infos.ContainsKey name

    /// The header entry of a tensor; KeyNotFoundException naming the tensor and the file when absent.
    member _.Info(name: string) : SafeTensorInfo =
        match infos.TryGetValue name with
        | true, i -> i
        | _ -> raise (KeyNotFoundException $"tensor '{name}' is not in {path}")

    /// Copies a tensor out of the map into a new CPU tensor of its stored dtype and shape.
    member this.Load(name: string) : torch.Tensor =
        if disposed then raise (ObjectDisposedException(path))
        let info = this.Info name
        let t = torch.empty(info.Shape, dtype = SafeDType.toTorch info.DType)
        let count = info.End - info.Begin
        if count > int64 Int32.MaxValue then
            t.Dispose()
            raise (NotSupportedException $"tensor '{name}' in {path} has {count} bytes; tensors above 2 GiB are not supported")
        if count > 0L then
            let src = ReadOnlySpan<byte>(NativePtr.toVoidPtr (NativePtr.ofNativeInt<byte> (basePtr + nativeint (dataStart + info.Begin))), int count)
            src.CopyTo(t.bytes)
        t

    /// Loads a tensor and converts it to dtype (e.g. F16 or BF16 storage to float32).
    member this.Load(name: string, dtype: torch.ScalarType) : torch.Tensor =
        let t = this.Load name
        if t.dtype = dtype then t
        else
            use t = t
            t.to_type dtype

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                view.SafeMemoryMappedViewHandle.ReleasePointer()
                view.Dispose()
                map.Dispose()

/// Writing safetensors files.
[<RequireQualifiedAccess>]
module SafeTensors =
    /// Opens a file for reading (see SafeTensorsFile.Open).
    let openRead (path: string) = SafeTensorsFile.Open path

    /// Writes tensors (in the given order, each converted to a contiguous CPU copy of its own dtype) and string
    /// metadata to path. The file is written to a temporary sibling and renamed into place, so readers never see
    /// a partial file. Names must be unique and not "__metadata__".
    let write (path: string) (metadata: Map<string, string>) (tensors: (string * torch.Tensor) seq) : unit =
        if not (BitConverter.IsLittleEndian) then raise (PlatformNotSupportedException "safetensors writing needs a little-endian CPU")
        let tensors = Array.ofSeq tensors
        let seen = HashSet<string>()
        for name, _ in tensors do
            if name = "__metadata__" then invalidArg "tensors" "'__metadata__' is reserved in safetensors"
            if not (seen.Add name) then invalidArg "tensors" $"duplicate tensor name '{name}'"
        let entries =
            let mutable offset = 0L
            [| for name, t in tensors ->
                   let dtype = SafeDType.ofTorch t.dtype
                   let bytes = t.numel() * SafeDType.size dtype
                   let e = { Name = name; DType = dtype; Shape = t.shape; Begin = offset; End = offset + bytes }
                   offset <- offset + bytes
                   e |]
        let header =
            use stream = new MemoryStream()
            (use w = new Utf8JsonWriter(stream)
             w.WriteStartObject()
             if not metadata.IsEmpty then
                 w.WriteStartObject "__metadata__"
                 for KeyValue(k, v) in metadata do w.WriteString(k, v)
                 w.WriteEndObject()
             for e in entries do
                 w.WriteStartObject e.Name
                 w.WriteString("dtype", SafeDType.name e.DType)
                 w.WriteStartArray "shape"
                 for d in e.Shape do w.WriteNumberValue d
                 w.WriteEndArray()
                 w.WriteStartArray "data_offsets"
                 w.WriteNumberValue e.Begin
                 w.WriteNumberValue e.End
                 w.WriteEndArray()
                 w.WriteEndObject()
             w.WriteEndObject())
            let raw = stream.ToArray()
            // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
            let padded = (raw.Length + 7) / 8 * 8
            Array.append raw (Array.create (padded - raw.Length) (byte ' '))
        let full = Path.GetFullPath path
        let dir = Path.GetDirectoryName full
        Directory.CreateDirectory dir |> ignore
        let tmp = Path.Combine(dir, $".{Path.GetFileName full}.{Guid.NewGuid():N}.tmp")
        try
            (use fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 <<< 20)
             let len = Array.zeroCreate<byte> 8
             BinaryPrimitives.WriteUInt64LittleEndian(Span<byte>(len), uint64 header.Length)
             fs.Write(len, 0, 8)
             fs.Write(header, 0, header.Length)
             for (name, t), e in Array.zip tensors entries do
                 if e.End > e.Begin then
                     if e.End - e.Begin > int64 Int32.MaxValue then
                         raise (NotSupportedException $"tensor '{name}' has {e.End - e.Begin} bytes; tensors above 2 GiB are not supported")
                     use _ = torch.NewDisposeScope()
                     let c = t.detach().cpu().contiguous()
                     fs.Write(Span<byte>.op_Implicit (c.bytes): ReadOnlySpan<byte>)
             fs.Flush(true))
            File.Move(tmp, full, true)
        with _ ->
            if File.Exists tmp then File.Delete tmp
            reraise ()
