// Reads and weakens ELF symbol-version needs (.gnu.version_r). Compiled twice: as the MSBuild inline task
// WeakenGlibcxxNeed (build/TorchSharpNative.targets) and into the MagnetWhisper facade, where `magnet doctor`
// uses it to report whether the remedy is active. Keep it dependency-free.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace MagnetWhisper.Native
{
    /// <summary>One version that an ELF shared library needs from another library.</summary>
    public sealed class VersionNeed
    {
        /// <summary>Creates a version need.</summary>
        public VersionNeed(string file, string version, bool weak)
        {
            File = file;
            Version = version;
            Weak = weak;
        }

        /// <summary>The library the version is needed from (e.g. <c>libstdc++.so.6</c>).</summary>
        public string File { get; }

        /// <summary>The version name (e.g. <c>GLIBCXX_3.4.32</c>).</summary>
        public string Version { get; }

        /// <summary>True when the need is weak: the loader accepts a library that lacks the version.</summary>
        public bool Weak { get; }
    }

    /// <summary>ELF64 little-endian version-need inspection and the weak-need remedy for TorchSharp on older libstdc++.</summary>
    public static class ElfVersionNeed
    {
        /// <summary>The libstdc++ version TorchSharp 0.107.0 asks for; only <c>std::ios_base_library_init()</c> is bound to it.</summary>
        public const string TorchSharpGlibcxx = "GLIBCXX_3.4.32";

        /// <summary>The native TorchSharp binding library on Linux.</summary>
        public const string TorchSharpLibrary = "libLibTorchSharp.so";

        const uint ShtGnuVerneed = 0x6ffffffe;
        const ushort VerFlgWeak = 0x2;

        // (offset of the vna_flags field, need) for every need in the file.
        static List<(long FlagsOffset, VersionNeed Need)> Scan(byte[] elf)
        {
            if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
                throw new InvalidDataException("not an ELF file");
            if (elf[4] != 2 || elf[5] != 1)
                throw new InvalidDataException("only 64-bit little-endian ELF files are supported");
            long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
            int shentsize = BitConverter.ToUInt16(elf, 0x3A);
            int shnum = BitConverter.ToUInt16(elf, 0x3C);
            var result = new List<(long, VersionNeed)>();
            for (int i = 0; i < shnum; i++)
            {
                long sh = shoff + (long)i * shentsize;
                if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
                long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 24);
                int link = (int)BitConverter.ToUInt32(elf, (int)sh + 40);
                int count = (int)BitConverter.ToUInt32(elf, (int)sh + 44);
                long strtab = (long)BitConverter.ToUInt64(elf, (int)(shoff + (long)link * shentsize + 24));
                long vn = offset;
                for (int n = 0; n < count; n++)
                {
                    int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                    string file = CString(elf, strtab + BitConverter.ToUInt32(elf, (int)vn + 4));
                    long aux = vn + BitConverter.ToUInt32(elf, (int)vn + 8);
                    for (int a = 0; a < cnt; a++)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                        string name = CString(elf, strtab + BitConverter.ToUInt32(elf, (int)aux + 8));
                        result.Add((aux + 4, new VersionNeed(file, name, (flags & VerFlgWeak) != 0)));
                        aux += BitConverter.ToUInt32(elf, (int)aux + 12);
                    }
                    vn += BitConverter.ToUInt32(elf, (int)vn + 12);
                }
            }
            return result;
        }

        static string CString(byte[] bytes, long start)
        {
            int end = (int)start;
            while (bytes[end] != 0) end++;
            return Encoding.ASCII.GetString(bytes, (int)start, end - (int)start);
        }

        /// <summary>Lists the version needs of an ELF shared library.</summary>
        public static IReadOnlyList<VersionNeed> ReadNeeds(string path)
        {
            var needs = new List<VersionNeed>();
            foreach (var entry in Scan(File.ReadAllBytes(path))) needs.Add(entry.Need);
            return needs;
        }

        /// <summary>
        /// Marks the need for <paramref name="version"/> weak in the library at <paramref name="path"/>.
        /// Writes through a temporary file and a rename, so hard links (e.g. to a package cache) are never written through.
        /// Returns true when the file was changed, false when the need was already weak or absent.
        /// </summary>
        public static bool Weaken(string path, string version)
        {
            byte[] elf = File.ReadAllBytes(path);
            bool changed = false;
            foreach (var (flagsOffset, need) in Scan(elf))
            {
                if (need.Version != version || need.Weak) continue;
                ushort flags = (ushort)(BitConverter.ToUInt16(elf, (int)flagsOffset) | VerFlgWeak);
                elf[flagsOffset] = (byte)(flags & 0xff);
                elf[flagsOffset + 1] = (byte)(flags >> 8);
                changed = true;
            }
            if (!changed) return false;
            string temp = path + ".weak-need.tmp";
            File.WriteAllBytes(temp, elf);
            File.Replace(temp, path, null); // a rename: the old inode (perhaps the package cache's) is left alone
            return true;
        }

        /// <summary>The libstdc++ the dynamic loader would pick (LD_LIBRARY_PATH first, then the system folders), or null.</summary>
        public static string? FindSystemLibStdCxx()
        {
            var folders = new List<string>();
            var ldPath = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
            if (!string.IsNullOrEmpty(ldPath)) folders.AddRange(ldPath.Split(new[] { ':' }, StringSplitOptions.RemoveEmptyEntries));
            folders.AddRange(new[]
            {
                "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib64", "/usr/lib64", "/lib", "/usr/lib",
            });
            foreach (var folder in folders)
            {
                var candidate = Path.Combine(folder, "libstdc++.so.6");
                if (File.Exists(candidate)) return candidate;
            }
            return null;
        }

        /// <summary>True when the library's string table holds the version name, i.e. it defines that version.</summary>
        public static bool LibraryDefinesVersion(string libraryPath, string version)
        {
            byte[] bytes = File.ReadAllBytes(libraryPath);
            byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
            for (int i = 0; i + needle.Length <= bytes.Length; i++)
            {
                if (bytes[i] != needle[0]) continue;
                int j = 1;
                while (j < needle.Length && bytes[i + j] == needle[j]) j++;
                if (j == needle.Length) return true;
            }
            return false;
        }

        /// <summary>True when this system's libstdc++ lacks <see cref="TorchSharpGlibcxx"/> (so the remedy is needed).</summary>
        public static bool SystemNeedsRemedy()
        {
            var lib = FindSystemLibStdCxx();
            return lib != null && !LibraryDefinesVersion(lib, TorchSharpGlibcxx);
        }

        /// <summary>
        /// Applies the remedy to every copy of <see cref="TorchSharpLibrary"/> below <paramref name="directory"/> when the
        /// system needs it. Returns the files changed. Idempotent.
        /// </summary>
        public static IReadOnlyList<string> WeakenTorchSharpBelow(string directory)
        {
            var changed = new List<string>();
            if (!Directory.Exists(directory) || !SystemNeedsRemedy()) return changed;
            foreach (var file in Directory.EnumerateFiles(directory, TorchSharpLibrary, SearchOption.AllDirectories))
                if (Weaken(file, TorchSharpGlibcxx)) changed.Add(file);
            return changed;
        }
    }
}

#if !MAGNET_LIBRARY
/// <summary>MSBuild task: weakens the GLIBCXX_3.4.32 need of every libLibTorchSharp.so below a folder, when needed.</summary>
public class WeakenGlibcxxNeed : Microsoft.Build.Utilities.Task
{
    /// <summary>The folder to search (an output or publish folder).</summary>
    [Microsoft.Build.Framework.Required]
    public string Directory { get; set; } = "";

    /// <inheritdoc />
    public override bool Execute()
    {
        foreach (var file in MagnetWhisper.Native.ElfVersionNeed.WeakenTorchSharpBelow(Directory))
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                "TorchSharp: weakened the GLIBCXX_3.4.32 need of " + file + " (system libstdc++ lacks it)");
        return true;
    }
}
#endif
