/// NumPy `.npy` files (format version 1.0 written; 1.0, 2.0 and 3.0 read): little-endian `f4`, `f8`, `i4`, `i8`,
/// `u1` and `b1` arrays in C order (Fortran order is read too), so features and masks can be compared with Python tools.
module MagnetWhisper.Core.Audio.Npy

open System
open System.IO
open System.Text
open System.Text.RegularExpressions
open TorchSharp

type private Tensor = torch.Tensor

let private magic = [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y' |]

/// NumPy descriptor ↔ TorchSharp dtype, with the element size in bytes.
let private kinds =
    [ "<f4", torch.ScalarType.Float32, 4
      "<f8", torch.ScalarType.Float64, 8
      "<i4", torch.ScalarType.Int32, 4
      "<i8", torch.ScalarType.Int64, 8
      "|u1", torch.ScalarType.Byte, 1
      "|b1", torch.ScalarType.Bool, 1 ]

let private fail (name: string) (problem: string) = raise (InvalidDataException $"{name}: {problem}")

/// The header dictionary text, padded with spaces and a final newline so that the data starts on a 64-byte boundary
/// (what NumPy writes).
let private headerText (descr: string) (shape: int64[]) =
    let dims =
        match shape with
        | [||] -> "()"
        | [| n |] -> $"({n},)"
        | s -> "(" + String.Join(", ", s) + ")"
    let dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}"
    let unpadded = magic.Length + 4 + dict.Length + 1
    let padding = (64 - unpadded % 64) % 64
    dict + String(' ', padding) + "\n"

/// Writes a CPU-or-device tensor of dtype float32, float64, int32, int64, uint8 or bool to a stream as .npy v1.0
/// (C order). Other dtypes raise an ArgumentException.
let writeStream (stream: Stream) (t: Tensor) : unit =
    let descr =
        match kinds |> List.tryFind (fun (_, dt, _) -> dt = t.dtype) with
        | Some(d, _, _) -> d
        | None -> invalidArg "t" $"Npy.write: dtype {t.dtype} is not supported (use float32, float64, int32, int64, uint8 or bool)"
    let header = Encoding.ASCII.GetBytes(headerText descr t.shape)
    if header.Length > int UInt16.MaxValue then invalidArg "t" "Npy.write: shape too long for a version 1.0 header"
    stream.Write(magic, 0, magic.Length)
    stream.WriteByte 1uy
    stream.WriteByte 0uy
    stream.WriteByte(byte (header.Length &&& 0xFF))
    stream.WriteByte(byte (header.Length >>> 8))
    stream.Write(header, 0, header.Length)
    use c = t.detach().cpu().contiguous()
    if c.numel() > 0L then
        if not BitConverter.IsLittleEndian then raise (PlatformNotSupportedException "Npy.write needs a little-endian machine")
        stream.Write(ReadOnlySpan<byte>(c.bytes.ToArray()))

/// Writes a tensor (float32, float64, int32, int64, uint8 or bool; any device) to a .npy file, atomically: an
/// existing file keeps its content if anything fails.
let write (path: string) (t: Tensor) : unit = MagnetWhisper.Core.AtomicWrite.file path (fun fs -> writeStream fs t)

/// Writes a float32 array with the given C-order shape to a .npy file; the shape's product must equal the length.
let writeFloat32 (path: string) (shape: int64[]) (data: float32[]) : unit =
    if Array.fold (*) 1L shape <> int64 data.Length then
        invalidArg "shape" $"Npy.writeFloat32: shape {MagnetWhisper.Core.Tensors.showShape shape} does not hold {data.Length} values"
    use t = if data.Length = 0 then torch.empty(shape, dtype = torch.float32) else torch.tensor(data, ReadOnlySpan<int64>(shape))
    write path t

/// Reads a .npy array from a stream into a CPU tensor; name labels errors (a file name or "archive.npz/entry.npy").
/// Bad magic, unsupported descriptors (big-endian, other types), malformed headers and truncated data raise
/// InvalidDataException naming the source.
let readStream (name: string) (stream: Stream) : Tensor =
    let readExactly (n: int) (what: string) =
        let buf = Array.zeroCreate<byte> n
        let mutable got = 0
        let mutable stop = false
        while got < n && not stop do
            let r = stream.Read(buf, got, n - got)
            if r = 0 then stop <- true else got <- got + r
        if got < n then fail name $"truncated .npy file: {what} needs {n} bytes, only {got} present"
        buf
    let pre = readExactly 8 "the preamble"
    if pre.[0..5] <> magic then fail name "not a .npy file (bad magic)"
    let major = int pre.[6]
    let headerLength =
        match major with
        | 1 -> BitConverter.ToUInt16(readExactly 2 "the header length", 0) |> int
        | 2 | 3 -> BitConverter.ToUInt32(readExactly 4 "the header length", 0) |> int
        | v -> fail name $".npy format version {v}.{pre.[7]} is not supported"
    if headerLength < 0 || headerLength > (1 <<< 20) then fail name $"implausible .npy header length {headerLength}"
    let header = Encoding.UTF8.GetString(readExactly headerLength "the header")
    let field (key: string) (pattern: string) =
        let m = Regex.Match(header, $"'{key}'\\s*:\\s*{pattern}")
        if not m.Success then fail name $"malformed .npy header (no '{key}'): {header.Trim()}"
        m.Groups.[1].Value
    let descr0 = field "descr" "'([^']*)'"
    // '=' and '|' mean native/irrelevant byte order; single-byte types may carry any order mark.
    let descr =
        match descr0 with
        | d when d.Length = 3 && d.[0] = '=' -> "<" + d.Substring 1
        | d when d.Length = 3 && d.EndsWith "1" -> "|" + d.Substring 1
        | d -> d
    let fortran = field "fortran_order" "(True|False)" = "True"
    let shape =
        (field "shape" "\\(([^)]*)\\)").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.map (fun s ->
            match Int64.TryParse s with
            | true, v when v >= 0L -> v
            | _ -> fail name $"malformed .npy shape: {header.Trim()}")
    let dtype, size =
        match kinds |> List.tryFind (fun (d, _, _) -> d = descr) with
        | Some(_, dt, sz) -> dt, sz
        | None ->
            let why = if descr.StartsWith ">" then " (big-endian data)" else ""
            fail name $".npy dtype '{descr0}'{why} is not supported (supported: <f4, <f8, <i4, <i8, |u1, |b1)"
    let count = Array.fold (*) 1L shape
    let bytes = count * int64 size
    if bytes > int64 Int32.MaxValue then fail name $".npy array of {bytes} bytes is too large"
    let data = readExactly (int bytes) "the array data"
    if not BitConverter.IsLittleEndian then raise (PlatformNotSupportedException "Npy.read needs a little-endian machine")
    // Fortran order: the data is the C-order array of the reversed shape, transposed.
    let storedShape = if fortran then Array.rev shape else shape
    let t = torch.empty(storedShape, dtype = dtype)
    if count > 0L then ReadOnlySpan<byte>(data).CopyTo(t.bytes)
    if fortran && shape.Length > 1 then
        use stored = t
        stored.permute(Array.init shape.Length (fun i -> int64 (shape.Length - 1 - i))).contiguous()
    else t

/// Reads a .npy file into a CPU tensor (see readStream for the formats and errors).
let read (path: string) : Tensor =
    if not (File.Exists path) then raise (FileNotFoundException($"{path}: file not found", path))
    use fs = File.OpenRead path
    readStream path fs

/// Reads a .npy file as float32 values (converting f8/i4/i8/u1/b1) with its shape.
let readFloat32 (path: string) : int64[] * float32[] =
    use t = read path
    use f = t.to_type(torch.float32).contiguous()
    f.shape, (if f.numel() = 0L then [||] else f.data<float32>().ToArray())

/// Reads one array of a .npz archive (a zip of .npy files) into a CPU tensor; key is the array name without ".npy".
let readNpz (path: string) (key: string) : Tensor =
    if not (File.Exists path) then raise (FileNotFoundException($"{path}: file not found", path))
    use zip =
        try Compression.ZipFile.OpenRead path
        with :? InvalidDataException as e -> fail path $"not a .npz (zip) archive: {e.Message}"
    match zip.GetEntry(key + ".npy") with
    | null ->
        let names = zip.Entries |> Seq.map (fun e -> e.FullName) |> String.concat ", "
        fail path $"no array '{key}' in the archive (it holds {names})"
    | entry ->
        use s = entry.Open()
        readStream $"{path}/{key}.npy" s
