module MagnetWhisper.Tests.Whisper.SafeTensorsTests

open System
open System.IO
open System.Text
open System.Text.Json
open Expecto
open TorchSharp
open MagnetWhisper.Core.Whisper
open MagnetWhisper.Tests.Whisper.WhisperReference

/// Writes a safetensors file byte by byte: length, header text, data.
let private writeRaw (path: string) (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    use fs = File.Create path
    fs.Write(BitConverter.GetBytes(uint64 h.Length), 0, 8)
    fs.Write(h, 0, h.Length)
    fs.Write(data, 0, data.Length)

let private u16 (v: uint16) = BitConverter.GetBytes v
let private f32 (v: float32) = BitConverter.GetBytes v

let private corruptMessage (dir: TempDir) (name: string) (write: string -> unit) =
    let path = dir.Sub name
    write path
    let e = Expect.throwsC (fun () -> (SafeTensorsFile.Open path :> IDisposable).Dispose()) id
    Expect.isTrue (e :? InvalidDataException) $"InvalidDataException for {name}, got {e.GetType().Name}: {e.Message}"
    Expect.stringContains e.Message "corrupt safetensors header" "says what is wrong"
    Expect.stringContains e.Message path "names the file"
    e.Message

[<Tests>]
let tests =
    testList "whisper" [
        testList "safetensors" [
            test "reads a file written byte by byte, converting F16 and BF16" {
                use dir = new TempDir()
                let path = dir.Sub "raw.safetensors"
                let header =
                    """{"__metadata__":{"format":"pt","note":"hand"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"""
                    + """"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[22,26]}}"""
                // F16: 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800; BF16: 1.0 = 0x3F80, -3.0 = 0xC040.
                let data =
                    Array.concat [ f32 1.0f; f32 2.0f; f32 3.0f; f32 -4.5f; u16 0x3C00us; u16 0xC000us; u16 0x3800us; u16 0x3F80us; u16 0xC040us ]
                writeRaw path header data
                use f = SafeTensorsFile.Open path
                Expect.sequenceEqual f.Names [ "a"; "b"; "c" ] "names in header order"
                Expect.equal f.Metadata (Map [ "format", "pt"; "note", "hand" ]) "metadata"
                use a = f.Load "a"
                Expect.sequenceEqual a.shape [| 2L; 2L |] "shape"
                Expect.sequenceEqual (a.data<float32>().ToArray()) [| 1.0f; 2.0f; 3.0f; -4.5f |] "F32 values"
                use b = f.Load "b"
                Expect.equal b.dtype torch.ScalarType.Float16 "stored dtype kept"
                use b32 = f.Load("b", torch.ScalarType.Float32)
                Expect.sequenceEqual (b32.data<float32>().ToArray()) [| 1.0f; -2.0f; 0.5f |] "F16 → F32"
                use c32 = f.Load("c", torch.ScalarType.Float32)
                Expect.sequenceEqual (c32.data<float32>().ToArray()) [| 1.0f; -3.0f |] "BF16 → F32"
                Expect.throwsT<Collections.Generic.KeyNotFoundException> (fun () -> f.Load "d" |> ignore) "unknown tensor"
            }

            test "writes the format another reader expects (checked by parsing the bytes here)" {
                use dir = new TempDir()
                let path = dir.Sub "w.safetensors"
                use x = torch.tensor([| 1.5f; -2.0f; 3.25f; 0.0f; 7.0f; 8.0f |]).view(2L, 3L)
                use y = torch.tensor([| 1.0f; 0.5f |]).to_type torch.ScalarType.Float16
                SafeTensors.write path (Map [ "format", "pt" ]) [ "x", x; "y", y ]
                let bytes = File.ReadAllBytes path
                let n = BitConverter.ToUInt64(bytes, 0) |> int
                Expect.equal ((8 + n) % 8) 0 "data section 8-byte aligned"
                use doc = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, n).TrimEnd(' '))
                let root = doc.RootElement
                Expect.equal (root.GetProperty("__metadata__").GetProperty("format").GetString()) "pt" "metadata"
                let entry (name: string) =
                    let e = root.GetProperty name
                    e.GetProperty("dtype").GetString(),
                    [ for d in e.GetProperty("shape").EnumerateArray() -> d.GetInt64() ],
                    [ for d in e.GetProperty("data_offsets").EnumerateArray() -> d.GetInt64() ]
                Expect.equal (entry "x") ("F32", [ 2L; 3L ], [ 0L; 24L ]) "x entry"
                Expect.equal (entry "y") ("F16", [ 2L ], [ 24L; 28L ]) "y entry"
                let data = 8 + n
                let xs = Array.init 6 (fun i -> BitConverter.ToSingle(bytes, data + 4 * i))
                Expect.sequenceEqual xs [| 1.5f; -2.0f; 3.25f; 0.0f; 7.0f; 8.0f |] "x bytes"
                Expect.equal (BitConverter.ToUInt16(bytes, data + 24), BitConverter.ToUInt16(bytes, data + 26)) (0x3C00us, 0x3800us) "y bytes"
                Expect.equal bytes.Length (data + 28) "no trailing bytes"
                Expect.isEmpty (Directory.GetFiles(dir.Path, ".*")) "no temporary file left"
            }

            test "round-trips every dtype and awkward shapes exactly" {
                use dir = new TempDir()
                let path = dir.Sub "all.safetensors"
                torch.manual_seed 5L |> ignore
                let tensors =
                    [ "f32", torch.randn(3L, 4L)
                      "f16", torch.randn(2L, 3L, 4L).to_type torch.ScalarType.Float16
                      "bf16", torch.randn(5L).to_type torch.ScalarType.BFloat16
                      "f64", torch.randn(2L, 2L, dtype = torch.float64)
                      "i64", torch.randint(1000L, [| 7L |], dtype = torch.int64)
                      "i32", torch.randint(1000L, [| 2L; 2L |], dtype = torch.int32)
                      "u8", torch.randint(255L, [| 3L |], dtype = torch.ScalarType.Byte)
                      "bool", torch.randn(4L).gt(torch.tensor 0.0f)
                      "scalar", torch.tensor 3.5f
                      "empty", torch.zeros(0L, 4L)
                      "strided", torch.randn(4L, 3L).t() ]
                SafeTensors.write path Map.empty tensors
                use f = SafeTensorsFile.Open path
                for name, t in tensors do
                    use back = f.Load name
                    Expect.equal back.dtype t.dtype $"{name} dtype"
                    Expect.sequenceEqual back.shape t.shape $"{name} shape"
                    Expect.isTrue (identical back t) $"{name} values"
                Expect.throwsT<ArgumentException> (fun () -> SafeTensors.write path Map.empty [ "a", torch.ones 1; "a", torch.ones 1 ]) "duplicate names"
            }

            test "corrupt headers are rejected with clear errors" {
                use dir = new TempDir()
                let good = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"""
                Expect.stringContains (corruptMessage dir "short" (fun p -> File.WriteAllBytes(p, [| 1uy; 2uy; 3uy |]))) "fewer than the 8-byte" "truncated"
                let huge (p: string) =
                    File.WriteAllBytes(p, Array.append (BitConverter.GetBytes 1000000UL) (Encoding.UTF8.GetBytes good))
                Expect.stringContains (corruptMessage dir "huge" huge) "exceeds" "header length too large"
                Expect.stringContains (corruptMessage dir "json" (fun p -> writeRaw p "{\"a\": {\"dtype\"" [||])) "invalid JSON" "bad JSON"
                Expect.stringContains (corruptMessage dir "array" (fun p -> writeRaw p "[1, 2]" [||])) "not a JSON object" "not an object"
                let outside = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"""
                Expect.stringContains (corruptMessage dir "outside" (fun p -> writeRaw p outside (Array.zeroCreate 4))) "outside the data section" "offsets beyond the file"
                let size = """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"""
                Expect.stringContains (corruptMessage dir "size" (fun p -> writeRaw p size (Array.zeroCreate 8))) "expected 12" "size vs shape"
                let dtype = """{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"""
                Expect.stringContains (corruptMessage dir "dtype" (fun p -> writeRaw p dtype (Array.zeroCreate 2))) "F8_E4M3" "unknown dtype"
                let overlap = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"""
                Expect.stringContains (corruptMessage dir "overlap" (fun p -> writeRaw p overlap (Array.zeroCreate 8))) "overlap" "overlapping tensors"
                let noOffsets = """{"a":{"dtype":"F32","shape":[2]}}"""
                Expect.stringContains (corruptMessage dir "nooffsets" (fun p -> writeRaw p noOffsets (Array.zeroCreate 8))) "data_offsets" "missing field"
                let negative = """{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"""
                Expect.stringContains (corruptMessage dir "negative" (fun p -> writeRaw p negative (Array.zeroCreate 8))) "non-negative" "negative dimension"
                Expect.throwsT<FileNotFoundException> (fun () -> SafeTensorsFile.Open(dir.Sub "absent") |> ignore) "missing file"
            }
        ]
    ]
