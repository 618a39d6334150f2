using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using Xunit;

namespace MagnetWhisper.Api.Tests;

/// <summary>
/// Finds the F# types a C# caller would meet in an assembly's public surface: types of FSharp.Core (options, lists,
/// function types), any type of MagnetWhisper.Core (its records, unions and classes expose F# types in turn), and any
/// F# record, union or module of another assembly (marked with FSharp.Core's CompilationMappingAttribute).
/// </summary>
static class FSharpSurface
{
    const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    static bool IsFSharp(Type t) =>
        t.Assembly.GetName().Name is "FSharp.Core" or "MagnetWhisper.Core"
        || t.CustomAttributes.Any(a => a.AttributeType.FullName == "Microsoft.FSharp.Core.CompilationMappingAttribute");

    /// <summary>The F# types inside a type: itself, its element type and its generic arguments, recursively.</summary>
    static IEnumerable<Type> FSharpTypesIn(Type t)
    {
        if (t.HasElementType) return FSharpTypesIn(t.GetElementType()!);
        if (t.IsGenericParameter) return Enumerable.Empty<Type>();
        var own = IsFSharp(t) ? new[] { t.IsGenericType ? t.GetGenericTypeDefinition() : t } : Array.Empty<Type>();
        return t.IsGenericType ? own.Concat(t.GetGenericArguments().SelectMany(FSharpTypesIn)) : own;
    }

    // What a caller outside the assembly can see: public and protected members.
    static bool Visible(MethodBase? m) => m is not null && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly);

    static bool Visible(FieldInfo f) => f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly;

    static IEnumerable<(string Where, Type Used)> Signature(MethodBase m, string where)
    {
        foreach (var p in m.GetParameters()) yield return ($"{where} parameter {p.Name}", p.ParameterType);
        if (m is MethodInfo mi)
        {
            yield return ($"{where} return", mi.ReturnType);
            if (mi.IsGenericMethodDefinition)
                foreach (var g in mi.GetGenericArguments())
                    foreach (var c in g.GetGenericParameterConstraints()) yield return ($"{where} constraint of {g.Name}", c);
        }
    }

    /// <summary>Every (member, type) pair of a type's visible surface.</summary>
    static IEnumerable<(string Where, Type Used)> Surface(Type type)
    {
        var name = type.FullName ?? type.Name;
        if (type.BaseType is not null) yield return ($"{name} base type", type.BaseType);
        foreach (var i in type.GetInterfaces()) yield return ($"{name} interface", i);
        foreach (var g in type.IsGenericTypeDefinition ? type.GetGenericArguments() : Type.EmptyTypes)
            foreach (var c in g.GetGenericParameterConstraints()) yield return ($"{name} constraint of {g.Name}", c);
        foreach (var f in type.GetFields(Declared).Where(Visible)) yield return ($"{name}.{f.Name}", f.FieldType);
        foreach (var c in type.GetConstructors(Declared).Where(Visible))
            foreach (var u in Signature(c, $"{name} constructor")) yield return u;
        // Accessors are reported as their property or event; operators and other methods as themselves.
        var accessors = type.GetProperties(Declared).SelectMany(p => p.GetAccessors(true))
            .Concat(type.GetEvents(Declared).SelectMany(e => new[] { e.AddMethod, e.RemoveMethod, e.RaiseMethod }))
            .Where(a => a is not null).ToHashSet();
        foreach (var m in type.GetMethods(Declared).Where(m => Visible(m) && !accessors.Contains(m)))
            foreach (var u in Signature(m, $"{name}.{m.Name}")) yield return u;
        foreach (var p in type.GetProperties(Declared))
        {
            if (!Visible(p.GetMethod) && !Visible(p.SetMethod)) continue;
            yield return ($"{name}.{p.Name}", p.PropertyType);
            foreach (var i in p.GetIndexParameters()) yield return ($"{name}.{p.Name} index {i.Name}", i.ParameterType);
        }
        foreach (var e in type.GetEvents(Declared).Where(e => Visible(e.AddMethod)))
            yield return ($"{name}.{e.Name}", e.EventHandlerType!);
    }

    /// <summary>"where: type" for every F# type in the visible surface of the given types.</summary>
    public static IReadOnlyList<string> Leaks(IEnumerable<Type> types) =>
        types.SelectMany(t => IsFSharp(t) ? new[] { ($"{t.FullName} itself", t) } : Surface(t))
            .SelectMany(u => FSharpTypesIn(u.Used).Select(f => $"{u.Where}: {f.FullName}"))
            .Distinct()
            .OrderBy(s => s, StringComparer.Ordinal)
            .ToArray();
}

/// <summary>Public types that expose F# types in the ways the checker must catch.</summary>
public class LeakyProperty
{
    public Microsoft.FSharp.Core.FSharpOption<int>? Count => null;
}

public class LeakyParameter
{
    public void Take(IReadOnlyList<Microsoft.FSharp.Collections.FSharpList<string>> lists) { }
}

public class LeakyCoreRecord
{
    protected MagnetWhisper.Core.Magnet.ForwardInput? Input;
}

public class LeakyFunction
{
    public Microsoft.FSharp.Core.FSharpFunc<int, int>[] Functions() => Array.Empty<Microsoft.FSharp.Core.FSharpFunc<int, int>>();
}

public class Clean
{
    public IReadOnlyList<int?> Counts { get; } = Array.Empty<int?>();

    internal Microsoft.FSharp.Core.FSharpOption<int>? Hidden => null;

    public void Take(Func<int, int> f, TorchSharp.torch.Tensor? t = null) { }
}

public class CSharpSurfaceTests
{
    [Fact]
    public void TheCheckerFindsFSharpTypesInPropertiesParametersFieldsAndGenericArguments()
    {
        Assert.Equal(new[] { "MagnetWhisper.Api.Tests.LeakyProperty.Count: Microsoft.FSharp.Core.FSharpOption`1" },
            FSharpSurface.Leaks(new[] { typeof(LeakyProperty) }));
        Assert.Equal(new[] { "MagnetWhisper.Api.Tests.LeakyParameter.Take parameter lists: Microsoft.FSharp.Collections.FSharpList`1" },
            FSharpSurface.Leaks(new[] { typeof(LeakyParameter) }));
        Assert.Equal(new[] { "MagnetWhisper.Api.Tests.LeakyCoreRecord.Input: MagnetWhisper.Core.Magnet.ForwardInput" },
            FSharpSurface.Leaks(new[] { typeof(LeakyCoreRecord) }));
        Assert.Equal(new[] { "MagnetWhisper.Api.Tests.LeakyFunction.Functions return: Microsoft.FSharp.Core.FSharpFunc`2" },
            FSharpSurface.Leaks(new[] { typeof(LeakyFunction) }));
        Assert.Empty(FSharpSurface.Leaks(new[] { typeof(Clean) }));
    }

    [Fact]
    public void TheFacadeExposesNoFSharpTypes()
    {
        var leaks = FSharpSurface.Leaks(typeof(MagnetWhisperModel).Assembly.GetExportedTypes());
        Assert.True(leaks.Count == 0, "F# types in the public surface of MagnetWhisper:\n" + string.Join("\n", leaks));
    }
}
