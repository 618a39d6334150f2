/// .npy reading and writing: round trips, byte-exact agreement with NumPy's own files, hand-built headers, errors.
module MagnetWhisper.Tests.Audio.NpyTests

open System
open System.IO
open System.IO.Compression
open Expecto
open FsCheck
open TorchSharp
open MagnetWhisper.Core
open MagnetWhisper.Core.Audio
open MagnetWhisper.Tests
open MagnetWhisper.Tests.Audio.Tools

let private roundTrip (t: torch.Tensor) : torch.Tensor =
    use ms = new MemoryStream()
    Npy.writeStream ms t
    ms.Position <- 0L
    Npy.readStream "memory.npy" ms

/// The bytes of an .npz entry as NumPy wrote them.
let private npzEntry (key: string) =
    use zip = ZipFile.OpenRead(data "mel_filters.npz")
    use s = zip.GetEntry(key + ".npy").Open()
    use ms = new MemoryStream()
    s.CopyTo ms
    ms.ToArray()

/// A .npy file with the given header dictionary (hand-built, version major.0).
let private handBuilt (major: byte) (dict: string) (payload: byte[]) =
    let header = Text.Encoding.ASCII.GetBytes(dict + "\n")
    use ms = new MemoryStream()
    let write (b: byte[]) = ms.Write(b, 0, b.Length)
    write [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; major; 0uy |]
    write (if major = 1uy then BitConverter.GetBytes(uint16 header.Length) else BitConverter.GetBytes(uint32 header.Length))
    write header
    write payload
    ms.ToArray()

let tests =
    testList "npy" [
        test "round-trips float32, float64, int32, int64, uint8 and bool tensors of several shapes" {
            for dtype in [ torch.ScalarType.Float32; torch.ScalarType.Float64; torch.ScalarType.Int32; torch.ScalarType.Int64; torch.ScalarType.Byte; torch.ScalarType.Bool ] do
                for shape in [ [||]; [| 5L |]; [| 2L; 3L |]; [| 2L; 0L; 3L |]; [| 3L; 4L; 5L |] ] do
                    use source = (torch.randn(shape, dtype = torch.float64) * 100.0).to_type(dtype)
                    use back = roundTrip source
                    Expect.equal back.dtype dtype $"{dtype} {Tensors.showShape shape}: dtype"
                    Expect.sequenceEqual back.shape shape $"{dtype} {Tensors.showShape shape}: shape"
                    use same = back.eq(source).all()
                    Expect.isTrue (same.item<bool>()) $"{dtype} {Tensors.showShape shape}: values"
        }
        test "writes byte-for-byte what NumPy wrote for the reference filterbanks" {
            for key in [ "mel_80"; "mel_128" ] do
                let original = npzEntry key
                use t = Npy.readStream key (new MemoryStream(original))
                use ms = new MemoryStream()
                Npy.writeStream ms t
                Expect.sequenceEqual (ms.ToArray()) original $"{key}: re-written bytes"
        }
        test "reads Fortran-order arrays and version 2.0 headers" {
            // [[1 2 3] [4 5 6]] stored column by column.
            let payload = [| 1.0; 4.0; 2.0; 5.0; 3.0; 6.0 |] |> Array.collect BitConverter.GetBytes
            use t = Npy.readStream "f.npy" (new MemoryStream(handBuilt 2uy "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }" payload))
            Expect.sequenceEqual t.shape [| 2L; 3L |] "shape"
            Expect.sequenceEqual (Tensors.toFloatArray t) [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |] "C-order values"
        }
        test "names the source and the problem for bad input" {
            raisesWith<InvalidDataException> [ "bad.npy"; "magic" ] (fun () -> Npy.readStream "bad.npy" (new MemoryStream(Text.Encoding.ASCII.GetBytes "PK\003\004 not numpy")) |> ignore) |> ignore
            let bigEndian = handBuilt 1uy "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }" (Array.zeroCreate 8)
            raisesWith<InvalidDataException> [ "be.npy"; "big-endian" ] (fun () -> Npy.readStream "be.npy" (new MemoryStream(bigEndian)) |> ignore) |> ignore
            let short = handBuilt 1uy "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }" (Array.zeroCreate 8)
            raisesWith<InvalidDataException> [ "short.npy"; "truncated" ] (fun () -> Npy.readStream "short.npy" (new MemoryStream(short)) |> ignore) |> ignore
            raisesWith<InvalidDataException> [ "mel_filters.npz"; "mel_64"; "mel_80" ] (fun () -> Npy.readNpz (data "mel_filters.npz") "mel_64" |> ignore) |> ignore
            raisesWith<FileNotFoundException> [ "absent.npy" ] (fun () -> Npy.read "absent.npy" |> ignore) |> ignore
        }
        Generators.prop "float32 arrays round-trip through files with their shape" (fun (values: NormalFloat list, PositiveInt cols) ->
            let cols = 1 + cols % 7
            let data = values |> List.map (fun v -> float32 v.Get) |> Array.ofList
            let rows = data.Length / cols
            let data = data.[0 .. rows * cols - 1]
            let path = Path.GetTempFileName()
            try
                Npy.writeFloat32 path [| int64 rows; int64 cols |] data
                let shape, back = Npy.readFloat32 path
                Expect.sequenceEqual shape [| int64 rows; int64 cols |] "shape"
                Expect.sequenceEqual back data "values"
            finally
                File.Delete path)
    ]
