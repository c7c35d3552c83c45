using System.Collections.Concurrent;
using System.Reflection;

namespace FastVideo.Configs;

/// <summary>A recipe record's YAML-visible properties: public settable (init) ones, keyed by snake_case name.</summary>
internal static class RecordShape
{
    private static readonly ConcurrentDictionary<Type, IReadOnlyList<(string Key, PropertyInfo Property)>> Cache = new();

    /// <summary>Properties in declaration order, base class first (so a family's extra role options print last).</summary>
    public static IReadOnlyList<(string Key, PropertyInfo Property)> Of(Type type) => Cache.GetOrAdd(type, static t =>
    {
        var chain = new List<Type>();
        for (var c = t; c is not null && c != typeof(object); c = c.BaseType) chain.Insert(0, c);
        return chain
            .SelectMany(c => c.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
                .Where(p => p.SetMethod is { IsPublic: true } && p.GetIndexParameters().Length == 0)
                .OrderBy(p => p.MetadataToken))
            .Select(p => (Names.ToSnakeCase(p.Name), p))
            .DistinctBy(x => x.Item1) // an override of a base property is the same key
            .ToList();
    });

    /// <summary>True for the record types the binder descends into (anything else must be a known leaf type).</summary>
    public static bool IsRecord(Type type) =>
        type.IsClass && type != typeof(string) && !type.IsAbstract && type.GetConstructor(Type.EmptyTypes) is not null
        && !typeof(System.Collections.IEnumerable).IsAssignableFrom(type);
}
