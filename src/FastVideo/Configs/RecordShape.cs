using System.Collections.Concurrent;
using System.ComponentModel;
using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace FastVideo.Configs;

/// <summary>One option of a recipe record, as <c>fastvideo families</c> / <c>fastvideo methods</c> list it.</summary>
/// <param name="Key">The YAML key (snake_case).</param>
/// <param name="Type">A short type name: int, float, bool, string, list[int], map, an enum's choices, ...; "?" = may be null.</param>
/// <param name="Default">The default as YAML would print it, or <c>(required)</c>.</param>
/// <param name="Description">From <see cref="DescriptionAttribute"/>; empty when the property has none.</param>
public sealed record OptionInfo(string Key, string Type, string Default, string Description, bool Required);

/// <summary>A recipe record's YAML-visible properties: public settable (init) ones, keyed by snake_case name.</summary>
internal static class RecordShape
{
    private static readonly ConcurrentDictionary<Type, IReadOnlyList<(string Key, PropertyInfo Property)>> Cache = new();
    // NullabilityInfoContext is not thread-safe (recipes may load on several threads, e.g. in tests): used under a lock.
    private static readonly NullabilityInfoContext Nullability = new();

    /// <summary>Properties in declaration order, base class first (so a family's extra role options print last).</summary>
    public static IReadOnlyList<(string Key, PropertyInfo Property)> Of(Type type) => Cache.GetOrAdd(type, static t =>
    {
        var chain = new List<Type>();
        for (var c = t; c is not null && c != typeof(object); c = c.BaseType) chain.Insert(0, c);
        return chain
            .SelectMany(c => c.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
                .Where(p => p.SetMethod is { IsPublic: true } && p.GetIndexParameters().Length == 0)
                .OrderBy(p => p.MetadataToken))
            .Select(p => (p.GetCustomAttribute<RecipeKeyAttribute>()?.Key ?? Names.ToSnakeCase(p.Name), p))
            .DistinctBy(x => x.Item1) // an override of a base property is the same key
            .ToList();
    });

    /// <summary>True for the record types the binder descends into (anything else must be a known leaf type).</summary>
    public static bool IsRecord(Type type) =>
        type.IsClass && type != typeof(string) && !type.IsAbstract && type.GetConstructor(Type.EmptyTypes) is not null
        && !typeof(System.Collections.IEnumerable).IsAssignableFrom(type);

    /// <summary>A C# <c>required</c> property: the recipe must give it (there is no default).</summary>
    public static bool IsRequired(PropertyInfo property) => property.IsDefined(typeof(RequiredMemberAttribute), inherit: false);

    /// <summary>True when the property is declared nullable (<c>int?</c>, <c>string?</c>): YAML null is a value.</summary>
    public static bool IsNullable(PropertyInfo property)
    {
        if (Nullable.GetUnderlyingType(property.PropertyType) is not null) return true;
        if (property.PropertyType.IsValueType) return false;
        lock (Nullability) return Nullability.Create(property).WriteState == NullabilityState.Nullable;
    }

    /// <summary>A new record with its defaults (required properties keep the CLR default until bound).</summary>
    public static object CreateDefault(Type type) =>
        Activator.CreateInstance(type) ?? throw new InvalidOperationException($"cannot create {type.Name}");

    /// <summary>The options of <paramref name="type"/> with their defaults and descriptions.</summary>
    /// <remarks>A nested options record (a role's <c>lora</c>) is listed as its own options, <c>lora.rank</c>, ...</remarks>
    public static IReadOnlyList<OptionInfo> Describe(Type type) => Describe(type, CreateDefault(type), "").ToList();

    private static IEnumerable<OptionInfo> Describe(Type type, object defaults, string prefix)
    {
        foreach (var (key, property) in Of(type))
        {
            bool required = IsRequired(property);
            var value = property.GetValue(defaults);
            if (!required && IsRecord(property.PropertyType))
            {
                foreach (var nested in Describe(property.PropertyType, value ?? CreateDefault(property.PropertyType), $"{prefix}{key}."))
                    yield return nested;
                continue;
            }
            var description = property.GetCustomAttribute<DescriptionAttribute>()?.Description ?? "";
            yield return new OptionInfo(prefix + key, TypeName(property.PropertyType, IsNullable(property)),
                required ? "(required)" : FormatDefault(value), description, required);
        }
    }

    /// <summary>The snake_case names an enum accepts (canonical first, then its <see cref="AliasesAttribute"/> names).</summary>
    public static IReadOnlyList<(string Name, object Value)> EnumNames(Type enumType) =>
        enumType.GetFields(BindingFlags.Public | BindingFlags.Static)
            .SelectMany(f => new[] { Names.ToSnakeCase(f.Name) }
                .Concat(f.GetCustomAttribute<AliasesAttribute>()?.Names ?? [])
                .Select(n => (n, f.GetValue(null)!)))
            .ToList();

    /// <summary>The canonical snake_case names of an enum's members (what the printer writes).</summary>
    public static IReadOnlyList<string> EnumChoices(Type enumType) =>
        enumType.GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => Names.ToSnakeCase(f.Name)).ToList();

    private static string TypeName(Type t, bool nullable)
    {
        if (Nullable.GetUnderlyingType(t) is { } u) return TypeName(u, false) + "?";
        var name = t == typeof(string) ? "string"
            : t == typeof(bool) ? "bool"
            : t == typeof(int) || t == typeof(long) ? "int"
            : t == typeof(double) ? "float"
            : t.IsEnum ? string.Join("|", EnumChoices(t))
            : t.IsGenericType && t.GetGenericTypeDefinition() == typeof(IReadOnlyList<>) ? $"list[{TypeName(t.GetGenericArguments()[0], false)}]"
            : t == typeof(IReadOnlyDictionary<string, object?>) ? "map"
            : t.Name;
        return nullable ? name + "?" : name;
    }

    private static string FormatDefault(object? v) => v switch
    {
        null => "null",
        bool b => b ? "true" : "false",
        string s => s.Length == 0 ? "\"\"" : s,
        double d => double.IsFinite(d) && d == Math.Floor(d) && Math.Abs(d) < 1e15
            ? d.ToString("0.0", CultureInfo.InvariantCulture)
            : d.ToString("R", CultureInfo.InvariantCulture),
        Enum e => Names.ToSnakeCase(e.ToString()),
        IReadOnlyDictionary<string, object?> m => m.Count == 0 ? "{}" : "{...}",
        System.Collections.IEnumerable list => $"[{string.Join(", ", list.Cast<object?>().Select(FormatDefault))}]",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };
}
