/// Proves that libtorch loads and computes in this test process (the libstdc++ remedy is in force where needed).
module MagnetWhisper.Tests.RuntimeTests

open Expecto
open TorchSharp
open MagnetWhisper.Native

[<Tests>]
let tests =
    testList "runtime" [
        test "tensors compute, forward and backward" {
            use x = torch.tensor([| 1.0f; 2.0f; 3.0f |], requires_grad = true)
            use y = (x * x).sum()
            y.backward()
            Expect.sequenceEqual (x.grad.data<float32>().ToArray()) [| 2.0f; 4.0f; 6.0f |] "d(x^2)/dx = 2x"
        }
        test "the loaded binding has a weak GLIBCXX_3.4.32 need exactly when the system lacks it" {
            use _ = torch.ones(1)
            let report = MagnetWhisper.Diagnostics.RuntimeReport.Collect()
            Expect.isTrue report.Usable "libtorch usable"
            if System.OperatingSystem.IsLinux() then
                Expect.isNotNull report.LoadedBindingPath "binding found in /proc/self/maps"
                let needed = ElfVersionNeed.SystemNeedsRemedy()
                let needs = ElfVersionNeed.ReadNeeds report.LoadedBindingPath
                let weak = needs |> Seq.exists (fun n -> n.Version = ElfVersionNeed.TorchSharpGlibcxx && n.Weak)
                if needed then Expect.isTrue weak "remedy applied where needed"
                Expect.isTrue (needs |> Seq.exists (fun n -> n.Version = ElfVersionNeed.TorchSharpGlibcxx)) "the need itself is kept"
        }
    ]
