using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// The facade's public API, recorded in src/Api.CSharp/PublicAPI.txt: one line per public type (its kind, name and
/// bases) followed by one per visible member, types by name and members sorted. A change to the surface fails this test until the file is updated (run the test with
/// UPDATE_PUBLIC_API=1 to rewrite it), so breaking a caller is a visible decision in the diff.
/// </summary>
public class PublicApiBaselineTests
{
    const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    static string Name(Type t)
    {
        if (t.IsByRef) return "ref " + Name(t.GetElementType()!);
        if (t.IsArray) return Name(t.GetElementType()!) + "[" + new string(',', t.GetArrayRank() - 1) + "]";
        if (t.IsGenericParameter) return t.Name;
        if (Nullable.GetUnderlyingType(t) is { } inner) return Name(inner) + "?";
        var name = t.IsNested ? Name(t.DeclaringType!) + "." + t.Name : t.Namespace + "." + t.Name;
        if (!t.IsGenericType) return name;
        var tick = name.IndexOf('`');
        return (tick < 0 ? name : name[..tick]) + "<" + string.Join(", ", t.GetGenericArguments().Select(Name)) + ">";
    }

    static string Parameters(MethodBase m) =>
        "(" + string.Join(", ", m.GetParameters().Select(p => Name(p.ParameterType) + " " + p.Name + (p.HasDefaultValue ? " = " + (p.DefaultValue ?? (p.ParameterType.IsValueType ? "default" : "null")) : ""))) + ")";

    static bool Visible(MethodBase? m) => m is not null && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly);

    static string Kind(Type t) =>
        t.IsEnum ? "enum" : t.IsInterface ? "interface" : t.IsValueType ? "struct"
        : typeof(Delegate).IsAssignableFrom(t) ? "delegate" : t.IsAbstract && t.IsSealed ? "static class"
        : t.IsAbstract ? "abstract class" : t.IsSealed ? "sealed class" : "class";

    /// <summary>The lines of one type: its declaration, then its members.</summary>
    static IEnumerable<string> Lines(Type t)
    {
        var name = Name(t);
        var bases = t.IsEnum ? Enumerable.Empty<string>() : new[] { t.BaseType }.Where(b => b is not null && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum))
            .Concat(t.GetInterfaces().Where(i => i.IsPublic)).Select(b => Name(b!)).OrderBy(b => b, StringComparer.Ordinal);
        yield return $"{Kind(t)} {name}" + (bases.Any() ? " : " + string.Join(", ", bases) : "");
        if (t.IsEnum)
        {
            foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.Static))
                yield return $"{name}.{f.Name} = {Convert.ToInt64(f.GetRawConstantValue())}";
            yield break;
        }
        foreach (var f in t.GetFields(Declared).Where(f => f.IsPublic || f.IsFamily))
            yield return $"{name}.{f.Name} field {Name(f.FieldType)}";
        foreach (var c in t.GetConstructors(Declared).Where(Visible))
            yield return $"{name} constructor{Parameters(c)}";
        foreach (var p in t.GetProperties(Declared))
        {
            var get = Visible(p.GetMethod) ? " get;" : "";
            var set = Visible(p.SetMethod) ? (p.SetMethod!.ReturnParameter.GetRequiredCustomModifiers().Any(m => m.Name == "IsExternalInit") ? " init;" : " set;") : "";
            if (get.Length + set.Length > 0)
                yield return $"{name}.{p.Name}{(p.GetIndexParameters().Length > 0 ? "[]" : "")} {Name(p.PropertyType)} {{{get}{set} }}" + (p.GetAccessors(true).Any(a => a.IsStatic) ? " static" : "");
        }
        foreach (var e in t.GetEvents(Declared).Where(e => Visible(e.AddMethod)))
            yield return $"{name}.{e.Name} event {Name(e.EventHandlerType!)}";
        var accessors = t.GetProperties(Declared).SelectMany(p => p.GetAccessors(true))
            .Concat(t.GetEvents(Declared).SelectMany(e => new[] { e.AddMethod, e.RemoveMethod })).ToHashSet();
        foreach (var m in t.GetMethods(Declared).Where(m => Visible(m) && !accessors.Contains(m)))
        {
            var generic = m.IsGenericMethodDefinition ? "<" + string.Join(", ", m.GetGenericArguments().Select(g => g.Name)) + ">" : "";
            yield return $"{name}.{m.Name}{generic}{Parameters(m)} {Name(m.ReturnType)}" + (m.IsStatic ? " static" : "") + (m.IsAbstract ? " abstract" : m.IsVirtual && !m.IsFinal ? " virtual" : "");
        }
    }

    static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MagnetWhisper.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("no MagnetWhisper.sln above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void PublicApiMatchesTheRecordedBaseline()
    {
        var assembly = typeof(MagnetWhisper.SupervisedTrainer).Assembly;
        // Types by name; in each, its declaration first, then its members sorted.
        var lines = assembly.GetExportedTypes().OrderBy(Name, StringComparer.Ordinal)
            .SelectMany(t => { var l = Lines(t).ToList(); return l.Take(1).Concat(l.Skip(1).OrderBy(x => x, StringComparer.Ordinal)); })
            .ToList();
        Assert.NotEmpty(lines);
        var text = string.Join("\n", lines) + "\n";
        var path = Path.Combine(Root(), "src", "Api.CSharp", "PublicAPI.txt");
        if (Environment.GetEnvironmentVariable("UPDATE_PUBLIC_API") == "1") File.WriteAllText(path, text);
        var recorded = File.Exists(path) ? File.ReadAllText(path).Replace("\r\n", "\n") : "";
        var added = lines.Except(recorded.Split('\n')).ToList();
        var removed = recorded.Split('\n', StringSplitOptions.RemoveEmptyEntries).Except(lines).ToList();
        Assert.True(added.Count == 0 && removed.Count == 0,
            "The facade's public API differs from src/Api.CSharp/PublicAPI.txt. If the change is intended, run this test " +
            "with UPDATE_PUBLIC_API=1 and commit the file.\nadded:\n  " + string.Join("\n  ", added) + "\nremoved:\n  " + string.Join("\n  ", removed));
    }
}
