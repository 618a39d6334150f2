namespace MagnetWhisper.Core.Magnet

// A reader for the subset of Python's pickle protocol (protocols 2–4 binary opcodes) that `torch.save` writes, and
// for PyTorch's zip container (`<archive>/data.pkl`, `<archive>/data/<key>` raw little-endian storages,
// `<archive>/byteorder`, `<archive>/version`). Nothing is executed: globals are names, and only the reconstructors
// torch uses (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, typed storages)
// are interpreted; anything else becomes an opaque object.

open System
open System.Buffers.Binary
open System.Collections.Generic
open System.IO
open System.IO.Compression
open System.Text
open TorchSharp

/// A typed storage of a torch archive: `data/<Key>` holds Numel elements of DType.
type TorchStorageRef =
    { Key: string
      DType: torch.ScalarType
      Numel: int64
      Location: string }

/// A tensor of a torch archive: a strided view of a storage (`_rebuild_tensor_v2`).
type TorchTensorRef =
    { Storage: TorchStorageRef
      Offset: int64
      Size: int64[]
      Stride: int64[]
      RequiresGrad: bool }

/// An unpickled value.
[<CustomEquality; NoComparison>]
type PickleValue =
    | PNone
    | PBool of bool
    | PInt of int64
    | PFloat of float
    | PString of string
    | PBytes of byte[]
    | PTuple of PickleValue list
    /// A list (mutable while unpickling: APPEND).
    | PList of ResizeArray<PickleValue>
    /// A dict or OrderedDict with its items in insertion order (mutable while unpickling: SETITEM).
    | PDict of ResizeArray<PickleValue * PickleValue>
    /// A global `module.name` (GLOBAL / STACK_GLOBAL), not resolved.
    | PGlobal of moduleName: string * name: string
    | PStorage of TorchStorageRef
    | PTensor of TorchTensorRef
    /// Any other REDUCE / NEWOBJ result: the callable, its arguments and the BUILD state (if any).
    | PObject of PickleObject

    override v.Equals(o: obj) =
        match o with
        | :? PickleValue as w ->
            match v, w with
            | PNone, PNone -> true
            | PBool a, PBool b -> a = b
            | PInt a, PInt b -> a = b
            | PFloat a, PFloat b -> a = b
            | PString a, PString b -> a = b
            | PBytes a, PBytes b -> a = b
            | PTuple a, PTuple b -> a = b
            | PList a, PList b -> List.ofSeq a = List.ofSeq b
            | PDict a, PDict b -> List.ofSeq a = List.ofSeq b
            | PGlobal(m1, n1), PGlobal(m2, n2) -> m1 = m2 && n1 = n2
            | PStorage a, PStorage b -> a = b
            | PTensor a, PTensor b -> a = b
            | PObject a, PObject b -> Object.ReferenceEquals(a, b)
            | _ -> false
        | _ -> false

    override v.GetHashCode() =
        match v with
        | PInt i -> i.GetHashCode()
        | PString s -> s.GetHashCode()
        | _ -> 0

/// An opaque reconstructed object.
and PickleObject(callable: PickleValue, args: PickleValue) =
    member val State: PickleValue option = None with get, set
    member _.Callable = callable
    member _.Args = args

/// Python pickle opcodes (Lib/pickle.py) that torch.save files use.
module internal Opcodes =
    let [<Literal>] MARK = '('B
    let [<Literal>] STOP = '.'B
    let [<Literal>] POP = '0'B
    let [<Literal>] POP_MARK = '1'B
    let [<Literal>] DUP = '2'B
    let [<Literal>] BININT = 'J'B
    let [<Literal>] BININT1 = 'K'B
    let [<Literal>] BININT2 = 'M'B
    let [<Literal>] NONE = 'N'B
    let [<Literal>] BINPERSID = 'Q'B
    let [<Literal>] REDUCE = 'R'B
    let [<Literal>] BINSTRING = 'T'B
    let [<Literal>] SHORT_BINSTRING = 'U'B
    let [<Literal>] BINUNICODE = 'X'B
    let [<Literal>] APPEND = 'a'B
    let [<Literal>] BUILD = 'b'B
    let [<Literal>] GLOBAL = 'c'B
    let [<Literal>] DICT = 'd'B
    let [<Literal>] EMPTY_DICT = '}'B
    let [<Literal>] APPENDS = 'e'B
    let [<Literal>] BINGET = 'h'B
    let [<Literal>] LONG_BINGET = 'j'B
    let [<Literal>] LIST = 'l'B
    let [<Literal>] EMPTY_LIST = ']'B
    let [<Literal>] BINPUT = 'q'B
    let [<Literal>] LONG_BINPUT = 'r'B
    let [<Literal>] SETITEM = 's'B
    let [<Literal>] TUPLE = 't'B
    let [<Literal>] EMPTY_TUPLE = ')'B
    let [<Literal>] SETITEMS = 'u'B
    let [<Literal>] BINFLOAT = 'G'B
    let [<Literal>] BINBYTES = 'B'B
    let [<Literal>] SHORT_BINBYTES = 'C'B
    let [<Literal>] PROTO = 0x80uy
    let [<Literal>] NEWOBJ = 0x81uy
    let [<Literal>] TUPLE1 = 0x85uy
    let [<Literal>] TUPLE2 = 0x86uy
    let [<Literal>] TUPLE3 = 0x87uy
    let [<Literal>] NEWTRUE = 0x88uy
    let [<Literal>] NEWFALSE = 0x89uy
    let [<Literal>] LONG1 = 0x8auy
    let [<Literal>] SHORT_BINUNICODE = 0x8cuy
    let [<Literal>] BINUNICODE8 = 0x8duy
    let [<Literal>] EMPTY_SET = 0x8fuy
    let [<Literal>] STACK_GLOBAL = 0x93uy
    let [<Literal>] MEMOIZE = 0x94uy
    let [<Literal>] FRAME = 0x95uy

/// The pickle virtual machine (Lib/pickle.py `_Unpickler`) for binary protocols 2–4, without executing anything.
[<RequireQualifiedAccess>]
module Pickle =
    /// Unpickles data. persistentLoad resolves BINPERSID ids; reduce builds REDUCE/NEWOBJ results from a callable
    /// and its argument tuple. Raises InvalidDataException naming the opcode and offset for anything outside the
    /// supported subset or malformed input.
    let loadWith (persistentLoad: PickleValue -> PickleValue) (reduce: PickleValue -> PickleValue -> PickleValue) (data: byte[]) : PickleValue =
        let stack = Stack<PickleValue>()
        let marks = Stack<int>()
        let memo = Dictionary<int64, PickleValue>()
        let mutable pos = 0
        let mutable result = None
        let fail (msg: string) : 'a = raise (InvalidDataException $"pickle: {msg} (at byte {pos})")
        let need n = if pos + n > data.Length then fail "unexpected end of data"
        let u8 () =
            need 1
            let b = data.[pos]
            pos <- pos + 1
            b
        let bytes n =
            if n < 0 then fail "negative length"
            need n
            let b = data.[pos .. pos + n - 1]
            pos <- pos + n
            b
        let i32 () =
            need 4
            let v = BinaryPrimitives.ReadInt32LittleEndian(ReadOnlySpan(data, pos, 4))
            pos <- pos + 4
            v
        let u16 () =
            need 2
            let v = BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(data, pos, 2))
            pos <- pos + 2
            int v
        let u32 () = int64 (uint32 (i32 ()))
        let u64 () =
            need 8
            let v = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(data, pos, 8))
            pos <- pos + 8
            v
        let readLine () =
            let start = pos
            while pos < data.Length && data.[pos] <> '\n'B do
                pos <- pos + 1
            if pos >= data.Length then fail "unterminated line"
            let s = Encoding.UTF8.GetString(data, start, pos - start)
            pos <- pos + 1
            s
        let pop () = if stack.Count = 0 then fail "stack underflow" else stack.Pop()
        let popMark () =
            if marks.Count = 0 then fail "no MARK on the stack"
            let m = marks.Pop()
            let items = [ while stack.Count > m do yield stack.Pop() ] |> List.rev
            items
        let top () = if stack.Count = 0 then fail "stack underflow" else stack.Peek()
        let littleSigned (b: byte[]) : int64 =
            if b.Length = 0 then 0L
            elif b.Length > 8 then fail $"integer of {b.Length} bytes does not fit in 64 bits"
            else
                let mutable v = 0L
                for i in b.Length - 1 .. -1 .. 0 do
                    v <- (v <<< 8) ||| int64 b.[i]
                // Sign-extend.
                let bits = 8 * b.Length
                if bits < 64 && (b.[b.Length - 1] &&& 0x80uy) <> 0uy then v - (1L <<< bits) else v
        let setItems (target: PickleValue) (items: PickleValue list) =
            match target with
            | PDict d ->
                let rec pairs xs =
                    match xs with
                    | k :: v :: rest ->
                        // Python dict semantics: a repeated key overwrites.
                        match Seq.tryFindIndex (fun (k2, _) -> k2 = k) d with
                        | Some i -> d.[i] <- (k, v)
                        | None -> d.Add((k, v))
                        pairs rest
                    | [] -> ()
                    | _ -> fail "SETITEMS with an odd number of items"
                pairs items
            | PObject o ->
                // A dict subclass reconstructed by REDUCE: keep the items as its state.
                o.State <- Some(PDict(ResizeArray(items |> List.chunkBySize 2 |> List.map (fun kv -> kv.[0], kv.[1]))))
            | other -> fail $"SETITEM(S) on a {other.GetType().Name}"
        let append (target: PickleValue) (items: PickleValue list) =
            match target with
            | PList l -> l.AddRange items
            | other -> fail $"APPEND(S) on a {other.GetType().Name}"
        while result.IsNone do
            let opAt = pos
            let op = u8 ()
            match op with
            | Opcodes.PROTO ->
                let v = u8 ()
                if v > 5uy then fail $"protocol {v} is not supported"
            | Opcodes.FRAME -> u64 () |> ignore
            | Opcodes.STOP -> result <- Some(pop ())
            | Opcodes.MARK -> marks.Push stack.Count
            | Opcodes.POP -> pop () |> ignore
            | Opcodes.POP_MARK -> popMark () |> ignore
            | Opcodes.DUP -> stack.Push(top ())
            | Opcodes.NONE -> stack.Push PNone
            | Opcodes.NEWTRUE -> stack.Push(PBool true)
            | Opcodes.NEWFALSE -> stack.Push(PBool false)
            | Opcodes.BININT -> stack.Push(PInt(int64 (i32 ())))
            | Opcodes.BININT1 -> stack.Push(PInt(int64 (u8 ())))
            | Opcodes.BININT2 -> stack.Push(PInt(int64 (u16 ())))
            | Opcodes.LONG1 -> stack.Push(PInt(littleSigned (bytes (int (u8 ())))))
            | Opcodes.BINFLOAT ->
                need 8
                let v = BinaryPrimitives.ReadDoubleBigEndian(ReadOnlySpan(data, pos, 8))
                pos <- pos + 8
                stack.Push(PFloat v)
            | Opcodes.BINUNICODE -> stack.Push(PString(Encoding.UTF8.GetString(bytes (int (u32 ())))))
            | Opcodes.SHORT_BINUNICODE -> stack.Push(PString(Encoding.UTF8.GetString(bytes (int (u8 ())))))
            | Opcodes.BINUNICODE8 -> stack.Push(PString(Encoding.UTF8.GetString(bytes (int (u64 ())))))
            | Opcodes.BINSTRING -> stack.Push(PString(Encoding.Latin1.GetString(bytes (i32 ()))))
            | Opcodes.SHORT_BINSTRING -> stack.Push(PString(Encoding.Latin1.GetString(bytes (int (u8 ())))))
            | Opcodes.BINBYTES -> stack.Push(PBytes(bytes (int (u32 ()))))
            | Opcodes.SHORT_BINBYTES -> stack.Push(PBytes(bytes (int (u8 ()))))
            | Opcodes.EMPTY_TUPLE -> stack.Push(PTuple [])
            | Opcodes.TUPLE1 -> stack.Push(PTuple [ pop () ])
            | Opcodes.TUPLE2 ->
                let b = pop ()
                let a = pop ()
                stack.Push(PTuple [ a; b ])
            | Opcodes.TUPLE3 ->
                let c = pop ()
                let b = pop ()
                let a = pop ()
                stack.Push(PTuple [ a; b; c ])
            | Opcodes.TUPLE -> stack.Push(PTuple(popMark ()))
            | Opcodes.EMPTY_LIST -> stack.Push(PList(ResizeArray()))
            | Opcodes.LIST -> stack.Push(PList(ResizeArray(popMark ())))
            | Opcodes.APPEND ->
                let v = pop ()
                append (top ()) [ v ]
            | Opcodes.APPENDS ->
                let items = popMark ()
                append (top ()) items
            | Opcodes.EMPTY_DICT -> stack.Push(PDict(ResizeArray()))
            | Opcodes.DICT ->
                let d = PDict(ResizeArray())
                setItems d (popMark ())
                stack.Push d
            | Opcodes.EMPTY_SET -> stack.Push(PList(ResizeArray()))
            | Opcodes.SETITEM ->
                let v = pop ()
                let k = pop ()
                setItems (top ()) [ k; v ]
            | Opcodes.SETITEMS ->
                let items = popMark ()
                setItems (top ()) items
            | Opcodes.GLOBAL ->
                let m = readLine ()
                let n = readLine ()
                stack.Push(PGlobal(m, n))
            | Opcodes.STACK_GLOBAL ->
                let n = pop ()
                let m = pop ()
                match m, n with
                | PString m, PString n -> stack.Push(PGlobal(m, n))
                | _ -> fail "STACK_GLOBAL needs two strings"
            | Opcodes.BINPERSID -> stack.Push(persistentLoad (pop ()))
            | Opcodes.REDUCE ->
                let args = pop ()
                let f = pop ()
                stack.Push(reduce f args)
            | Opcodes.NEWOBJ ->
                let args = pop ()
                let cls = pop ()
                stack.Push(reduce cls args)
            | Opcodes.BUILD ->
                let state = pop ()
                match top () with
                | PObject o -> o.State <- Some state
                | PDict _ -> () // an OrderedDict's `_metadata` attribute (module versions): not needed
                | PTensor _ -> () // a tensor's Python attributes
                | other -> fail $"BUILD on a {other.GetType().Name}"
            | Opcodes.BINPUT -> memo.[int64 (u8 ())] <- top ()
            | Opcodes.LONG_BINPUT -> memo.[u32 ()] <- top ()
            | Opcodes.MEMOIZE -> memo.[int64 memo.Count] <- top ()
            | Opcodes.BINGET ->
                let i = int64 (u8 ())
                match memo.TryGetValue i with
                | true, v -> stack.Push v
                | _ -> fail $"BINGET {i} of an empty memo slot"
            | Opcodes.LONG_BINGET ->
                let i = u32 ()
                match memo.TryGetValue i with
                | true, v -> stack.Push v
                | _ -> fail $"LONG_BINGET {i} of an empty memo slot"
            | other ->
                pos <- opAt
                fail $"unsupported opcode 0x{other:x2} ('{char other}')"
        result.Value

    /// Unpickles data without persistent ids; REDUCE of `collections.OrderedDict` gives a dict, anything else an
    /// opaque object.
    let load (data: byte[]) : PickleValue =
        let persistent (pid: PickleValue) : PickleValue = raise (InvalidDataException $"pickle: persistent id {pid} without a loader")
        let reduce (f: PickleValue) (args: PickleValue) =
            match f, args with
            | PGlobal("collections", "OrderedDict"), PTuple [] -> PDict(ResizeArray())
            | _ -> PObject(PickleObject(f, args))
        loadWith persistent reduce data

    /// The items of a dict value.
    let items (v: PickleValue) : (PickleValue * PickleValue) list =
        match v with
        | PDict d -> List.ofSeq d
        | PObject o ->
            match o.State with
            | Some(PDict d) -> List.ofSeq d
            | _ -> invalidArg "v" "not a dict"
        | _ -> invalidArg "v" $"expected a dict, got {v}"

    /// The elements of a list or tuple value.
    let elements (v: PickleValue) : PickleValue list =
        match v with
        | PList l -> List.ofSeq l
        | PTuple t -> t
        | _ -> invalidArg "v" $"expected a list or tuple, got {v}"

/// A file written by `torch.save` (the zip format of PyTorch ≥ 1.6): its unpickled object, with tensors as
/// references that `Tensor` materialises. Dispose to close the file.
type TorchArchive private (path: string, zip: ZipArchive, prefix: string, root: PickleValue, bigEndian: bool) =
    /// The element type of a torch storage class name (`FloatStorage`, `HalfStorage`, …).
    static member StorageDType(name: string) : torch.ScalarType option =
        match name with
        | "FloatStorage" -> Some torch.ScalarType.Float32
        | "DoubleStorage" -> Some torch.ScalarType.Float64
        | "HalfStorage" -> Some torch.ScalarType.Float16
        | "BFloat16Storage" -> Some torch.ScalarType.BFloat16
        | "LongStorage" -> Some torch.ScalarType.Int64
        | "IntStorage" -> Some torch.ScalarType.Int32
        | "ShortStorage" -> Some torch.ScalarType.Int16
        | "CharStorage" -> Some torch.ScalarType.Int8
        | "ByteStorage"
        | "UntypedStorage" -> Some torch.ScalarType.Byte
        | "BoolStorage" -> Some torch.ScalarType.Bool
        | _ -> None

    /// Bytes per element.
    static member ElementSize(dtype: torch.ScalarType) : int64 =
        match dtype with
        | torch.ScalarType.Float64
        | torch.ScalarType.Int64 -> 8L
        | torch.ScalarType.Float32
        | torch.ScalarType.Int32 -> 4L
        | torch.ScalarType.Float16
        | torch.ScalarType.BFloat16
        | torch.ScalarType.Int16 -> 2L
        | _ -> 1L

    /// Unpickles `data.pkl` of a torch zip archive given as bytes of its entries (for tests and in-memory use).
    static member ParsePickle(pickle: byte[]) : PickleValue =
        let persistent (pid: PickleValue) =
            match pid with
            | PTuple [ PString "storage"; PGlobal(_, storageType); PString key; PString location; PInt numel ] ->
                match TorchArchive.StorageDType storageType with
                | Some dtype -> PStorage { Key = key; DType = dtype; Numel = numel; Location = location }
                | None -> raise (InvalidDataException $"torch archive: unsupported storage type '{storageType}'")
            | other -> raise (InvalidDataException $"torch archive: unexpected persistent id {other}")
        let ints (name: string) (v: PickleValue) =
            match v with
            | PTuple _
            | PList _ ->
                [| for x in Pickle.elements v ->
                       match x with
                       | PInt i -> i
                       | _ -> raise (InvalidDataException $"torch archive: {name} must hold integers, got {x}") |]
            | _ -> raise (InvalidDataException $"torch archive: {name} must be a tuple, got {v}")
        let reduce (f: PickleValue) (args: PickleValue) =
            match f, args with
            | PGlobal("collections", "OrderedDict"), PTuple [] -> PDict(ResizeArray())
            | PGlobal("torch._utils", "_rebuild_tensor_v2"), PTuple(PStorage storage :: PInt offset :: size :: stride :: rest) ->
                let requiresGrad =
                    match rest with
                    | PBool g :: _ -> g
                    | _ -> false
                let size = ints "size" size
                let stride = ints "stride" stride
                if size.Length <> stride.Length then
                    raise (InvalidDataException $"torch archive: a tensor has size {size.Length}-d but stride {stride.Length}-d")
                // The largest element index the view touches must lie inside the storage.
                let last = Array.fold2 (fun acc s st -> if s = 0L then acc else acc + (s - 1L) * st) offset size stride
                if Array.contains 0L size |> not && (last >= storage.Numel || offset < 0L) then
                    raise (InvalidDataException $"torch archive: a tensor view (offset {offset}, size {size}, stride {stride}) exceeds its storage '{storage.Key}' of {storage.Numel} elements")
                PTensor { Storage = storage; Offset = offset; Size = size; Stride = stride; RequiresGrad = requiresGrad }
            | PGlobal("torch._utils", "_rebuild_parameter"), PTuple(PTensor t :: _) -> PTensor t
            | PGlobal("torch._utils", "_rebuild_parameter_with_state"), PTuple(PTensor t :: _) -> PTensor t
            | _ -> PObject(PickleObject(f, args))
        Pickle.loadWith persistent reduce pickle

    /// Opens a torch.save zip file and unpickles its data.pkl. Raises InvalidDataException for other formats (the
    /// legacy tar/pickle format of PyTorch < 1.6 is not supported) and for malformed archives.
    static member Open(path: string) : TorchArchive =
        if not (File.Exists path) then raise (FileNotFoundException($"torch file not found: {path}", path))
        let zip =
            try new ZipArchive(File.OpenRead path, ZipArchiveMode.Read, false)
            with :? InvalidDataException ->
                raise (InvalidDataException $"{path} is not a torch zip archive (files saved by PyTorch before 1.6 or with _use_new_zipfile_serialization=False are not supported)")
        try
            let dataPkl =
                zip.Entries
                |> Seq.tryFind (fun e -> e.FullName = "data.pkl" || e.FullName.EndsWith "/data.pkl")
                |> Option.defaultWith (fun () -> raise (InvalidDataException $"{path}: the zip archive has no data.pkl (not a torch.save file)"))
            let prefix = dataPkl.FullName.Substring(0, dataPkl.FullName.Length - "data.pkl".Length)
            let read (e: ZipArchiveEntry) =
                use s = e.Open()
                use m = new MemoryStream()
                s.CopyTo m
                m.ToArray()
            let bigEndian =
                match zip.GetEntry(prefix + "byteorder") with
                | null -> false
                | e ->
                    match Encoding.ASCII.GetString(read e).Trim() with
                    | "little" -> false
                    | "big" -> true
                    | other -> raise (InvalidDataException $"{path}: unknown byteorder '{other}'")
            let root =
                try TorchArchive.ParsePickle(read dataPkl)
                with :? InvalidDataException as e -> raise (InvalidDataException($"{path}: {e.Message}", e))
            new TorchArchive(path, zip, prefix, root, bigEndian)
        with _ ->
            zip.Dispose()
            reraise ()

    /// The file.
    member _.Path = path
    /// The unpickled object.
    member _.Root = root

    /// Materialises a tensor reference as a new contiguous CPU tensor of its stored dtype.
    member _.Tensor(t: TorchTensorRef) : torch.Tensor =
        let s = t.Storage
        let entry =
            match zip.GetEntry(prefix + "data/" + s.Key) with
            | null -> raise (InvalidDataException $"{path}: storage '{s.Key}' (data/{s.Key}) is missing")
            | e -> e
        let elementSize = TorchArchive.ElementSize s.DType
        let expected = s.Numel * elementSize
        if entry.Length <> expected then
            raise (InvalidDataException $"{path}: storage data/{s.Key} has {entry.Length} bytes, expected {s.Numel} × {elementSize}")
        if expected > int64 Int32.MaxValue then
            raise (NotSupportedException $"{path}: storage data/{s.Key} has {expected} bytes; storages above 2 GiB are not supported")
        use _ = torch.NewDisposeScope()
        let storage = torch.empty([| s.Numel |], dtype = s.DType)
        if expected > 0L then
            use stream = entry.Open()
            let span = storage.bytes
            let buffer = Array.zeroCreate<byte> (int expected)
            let mutable read = 0
            while read < buffer.Length do
                let n = stream.Read(buffer, read, buffer.Length - read)
                if n = 0 then raise (InvalidDataException $"{path}: storage data/{s.Key} ends early")
                read <- read + n
            if bigEndian && elementSize > 1L then
                let w = int elementSize
                for i in 0 .. w .. buffer.Length - w do
                    Array.Reverse(buffer, i, w)
            ReadOnlySpan<byte>(buffer).CopyTo(span)
        let view = storage.as_strided(t.Size, t.Stride, t.Offset)
        view.contiguous().clone().MoveToOuterDisposeScope()

    interface IDisposable with
        member _.Dispose() = zip.Dispose()
