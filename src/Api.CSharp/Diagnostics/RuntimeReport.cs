using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using MagnetWhisper.Native;
using TorchSharp;

namespace MagnetWhisper.Diagnostics
{
    /// <summary>An optional command-line tool and whether it was found on PATH.</summary>
    public sealed class ToolStatus
    {
        internal ToolStatus(string name, string purpose, string? path)
        {
            Name = name;
            Purpose = purpose;
            Path = path;
        }

        /// <summary>The command name, e.g. <c>ffmpeg</c>.</summary>
        public string Name { get; }

        /// <summary>What the project uses it for.</summary>
        public string Purpose { get; }

        /// <summary>Its full path, or null when it is not installed.</summary>
        public string? Path { get; }
    }

    /// <summary>What <c>magnet doctor</c> reports: the TorchSharp runtime, the libstdc++ remedy, devices and tools.</summary>
    public sealed class RuntimeReport
    {
        RuntimeReport() { }

        /// <summary>TorchSharp's assembly version.</summary>
        public string TorchSharpVersion { get; private set; } = "";

        /// <summary>libtorch's version, or null when libtorch could not be initialised.</summary>
        public string? LibTorchVersion { get; private set; }

        /// <summary>The error raised while initialising libtorch, or null when it loaded.</summary>
        public string? LoadError { get; private set; }

        /// <summary>The system libstdc++ the loader picks, or null when none was found (not Linux).</summary>
        public string? LibStdCxxPath { get; private set; }

        /// <summary>True when the system libstdc++ defines GLIBCXX_3.4.32 (no remedy needed).</summary>
        public bool LibStdCxxHasTorchSharpVersion { get; private set; }

        /// <summary>The libLibTorchSharp.so this process loaded (from /proc/self/maps), or null.</summary>
        public string? LoadedBindingPath { get; private set; }

        /// <summary>True when the loaded binding's GLIBCXX_3.4.32 need is weak (the remedy is applied).</summary>
        public bool RemedyActive { get; private set; }

        /// <summary>Intra-op CPU threads libtorch uses.</summary>
        public int CpuThreads { get; private set; }

        /// <summary>True when libtorch sees a CUDA device.</summary>
        public bool CudaAvailable { get; private set; }

        /// <summary>Number of CUDA devices.</summary>
        public int CudaDevices { get; private set; }

        /// <summary>Optional tools and whether they are installed.</summary>
        public IReadOnlyList<ToolStatus> Tools { get; private set; } = Array.Empty<ToolStatus>();

        /// <summary>True when tensors can be created and computed with (libtorch loaded and a matmul ran).</summary>
        public bool Usable => LoadError == null;

        static readonly (string Name, string Purpose)[] OptionalTools =
        {
            ("ffmpeg", "decoding mp3/ogg/m4a and other audio formats"),
            ("sox", "audio conversion in tests and benchmarks"),
            ("espeak-ng", "phoneme counts for words missing from the CMU dictionary"),
            ("flac", "reference decodes for the FLAC decoder's tests"),
        };

        /// <summary>Collects the report. Initialises libtorch and runs a small matrix product to prove it works.</summary>
        public static RuntimeReport Collect()
        {
            var report = new RuntimeReport
            {
                TorchSharpVersion = typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown",
                LibStdCxxPath = OperatingSystem.IsLinux() ? ElfVersionNeed.FindSystemLibStdCxx() : null,
            };
            report.LibStdCxxHasTorchSharpVersion =
                report.LibStdCxxPath != null && ElfVersionNeed.LibraryDefinesVersion(report.LibStdCxxPath, ElfVersionNeed.TorchSharpGlibcxx);
            try
            {
                using var a = torch.ones(4, 4);
                using var b = a.matmul(a);
                if (b[0, 0].item<float>() != 4f) throw new InvalidOperationException("a 4x4 matrix product gave a wrong result");
                report.LibTorchVersion = torch.__version__;
                report.CpuThreads = torch.get_num_threads();
                report.CudaAvailable = torch.cuda.is_available();
                report.CudaDevices = report.CudaAvailable ? torch.cuda.device_count() : 0;
            }
            catch (Exception e)
            {
                report.LoadError = e.InnerException?.Message ?? e.Message;
            }
            report.LoadedBindingPath = FindLoadedBinding();
            if (report.LoadedBindingPath != null)
                report.RemedyActive = ElfVersionNeed.ReadNeeds(report.LoadedBindingPath)
                    .Any(n => n.Version == ElfVersionNeed.TorchSharpGlibcxx && n.Weak);
            report.Tools = OptionalTools.Select(t => new ToolStatus(t.Name, t.Purpose, FindOnPath(t.Name))).ToArray();
            return report;
        }

        static string? FindLoadedBinding()
        {
            const string maps = "/proc/self/maps";
            if (!File.Exists(maps)) return null;
            return File.ReadLines(maps)
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).LastOrDefault())
                .FirstOrDefault(path => path != null && path.EndsWith("/" + ElfVersionNeed.TorchSharpLibrary, StringComparison.Ordinal));
        }

        /// <summary>The full path of a command found on PATH, or null.</summary>
        public static string? FindOnPath(string command)
        {
            var path = Environment.GetEnvironmentVariable("PATH") ?? "";
            return path.Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                .Select(dir => System.IO.Path.Combine(dir, command))
                .FirstOrDefault(File.Exists);
        }
    }
}
