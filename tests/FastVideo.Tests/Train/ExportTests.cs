using FastVideo.Cli.Commands;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Export;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>Three short `fastvideo train` runs on synthetic data whose checkpoints the export tests read.</summary>
public sealed class ExportFixture
{
    public ExportFixture()
    {
        Root = TestPaths.TempDir("export");
        (Data, Model) = TrainFixture.SyntheticDataAndModel(Root);

        // EMA from step 0 and a frozen teacher; checkpoints at steps 2 and 3.
        EmaRun = Train("ema", steps: 3, callbacks: "callbacks: {ema: {decay: 0.5, start_iter: 0}}", teacher: true);
        LateEmaRun = Train("late", steps: 1, callbacks: "callbacks: {ema: {decay: 0.5, start_iter: 100}}");
        PlainRun = Train("plain", steps: 1, callbacks: "");

        // A bare transformer folder (no pipeline around it) as the base model.
        BareModel = Path.Combine(Root, "bare", "wan-transformer");
        Directory.CreateDirectory(BareModel);
        foreach (var file in Directory.GetFiles(Path.Combine(Model, "transformer")))
            File.Copy(file, Path.Combine(BareModel, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(BareModel, "README.md"), "bare");
        BareRun = Train("barerun", steps: 1, callbacks: "", initFrom: BareModel);
    }

    public string Root { get; }
    public string Data { get; }
    public string Model { get; }
    public string EmaRun { get; }
    public string LateEmaRun { get; }
    public string PlainRun { get; }
    public string BareModel { get; }
    public string BareRun { get; }

    private string Train(string name, int steps, string callbacks, bool teacher = false, string? initFrom = null)
    {
        var output = Path.Combine(Root, name);
        var recipe = Path.Combine(Root, name + ".yaml");
        var vae = initFrom is null ? "" : $", vae_config: \"{Path.Combine(Data, "vae", "config.json")}\"";
        var teacherLine = teacher ? $"\n  teacher: {{init_from: \"{Model}\", trainable: false}}" : "";
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student: {"{"}init_from: "{initFrom ?? Model}"{"}"}{teacherLine}
            training:
              data: {"{"}data_path: "{Data}", train_batch_size: 2, seed: 7{"}"}
              optimizer: {"{"}learning_rate: 1.0e-2{"}"}
              loop: {"{"}max_train_steps: {steps}{"}"}
              checkpoint: {"{"}output_dir: "{output}", training_state_checkpointing_steps: 2{"}"}
            pipeline: {"{"}text_len: 6{vae}{"}"}
            {callbacks}
            """);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Cli.Cli.Run(["train", recipe], stdout, stderr);
        if (rc != 0) throw new InvalidOperationException($"training '{name}' failed: {stderr}{stdout}");
        return output;
    }
}

public class ExportTests(ExportFixture f) : IClassFixture<ExportFixture>
{
    private string Out(string name) => Path.Combine(f.Root, "exports", $"{name}-{Guid.NewGuid():N}");

    /// <summary>The output folder and any temporary or set-aside folders next to it.</summary>
    private static string[] Siblings(string output) =>
        Directory.GetDirectories(Path.GetDirectoryName(output)!).Where(d => Path.GetFileName(d).StartsWith(Path.GetFileName(output), StringComparison.Ordinal)).ToArray();

    private static int Export(string checkpoint, string? role, string output, bool ema = false, bool overwrite = false) =>
        ExportCommand.Run(checkpoint, role, output, ema, overwrite, new StringWriter());

    /// <summary>Every tensor of <paramref name="model"/> equals the same-named tensor of <paramref name="expected"/>, bit for bit.</summary>
    private static void AssertWeights(nn.Module model, IReadOnlyDictionary<string, Tensor> expected)
    {
        var state = model.state_dict();
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), state.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, t) in state)
            Assert.True(Same(t, expected[k]), $"tensor '{k}' differs");
    }

    private static bool Same(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.equal(b).all().item<bool>();

    [Fact]
    public void ExportsTheRolesLiveWeightsAsALoadableDiffusersFolder()
    {
        var output = Out("live");
        var sw = new StringWriter();
        Assert.Equal(0, ExportCommand.Run(f.EmaRun, "student", output, ema: false, overwrite: false, sw));
        Assert.Contains("checkpoint-3", sw.ToString());   // a run folder means its newest checkpoint

        // The base pipeline is there, with one set of transformer weights and the base model's config.
        Assert.True(File.Exists(Path.Combine(output, "model_index.json")));
        Assert.True(File.Exists(Path.Combine(output, "vae", "config.json")));
        Assert.Equal(File.ReadAllText(Path.Combine(f.Model, "transformer", "config.json")), File.ReadAllText(Path.Combine(output, "transformer", "config.json")));
        Assert.Equal(["config.json", "diffusion_pytorch_model.safetensors"],
            Directory.GetFiles(Path.Combine(output, "transformer")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal([output], Siblings(output));

        var checkpoint = CheckpointManager.PathFor(f.EmaRun, 3);
        var expected = SafeTensors.Load(CheckpointManager.RoleWeightsPath(checkpoint, "student"));
        using var model = WanTransformer3DModel.FromPretrained(output);
        AssertWeights(model, expected);

        // Training changed the weights, so the export is not just the base model.
        using var baseModel = WanTransformer3DModel.FromPretrained(f.Model);
        Assert.Contains(baseModel.state_dict(), kv => !Same(kv.Value, expected[kv.Key]));
    }

    [Fact]
    public void ExportsAChosenCheckpointAndHardLinksTheBaseFiles()
    {
        var output = Out("step2");
        var result = CheckpointExporter.Export(new ExportRequest
        {
            Checkpoint = CheckpointManager.PathFor(f.EmaRun, 2), Role = "student", OutputDir = output,
        });
        Assert.Equal(2, result.Step);
        Assert.True(result.Copied.Linked >= 2, $"linked {result.Copied.Linked}, copied {result.Copied.Copied}");   // model_index.json, vae/config.json
        Assert.Equal(2, result.Copied.Skipped);   // the base transformer's weights and config.json (written anew)
        var expected = SafeTensors.Load(CheckpointManager.RoleWeightsPath(CheckpointManager.PathFor(f.EmaRun, 2), "student"));
        using var model = WanTransformer3DModel.FromPretrained(output);
        AssertWeights(model, expected);
    }

    [Fact]
    public void ABareTransformerBaseBecomesTheTransformerFolder()
    {
        var output = Out("bare");
        Assert.Equal(0, Export(f.BareRun, "student", output));
        Assert.Equal(["transformer"], Directory.GetFileSystemEntries(output).Select(Path.GetFileName));
        Assert.Equal(["README.md", "config.json", "diffusion_pytorch_model.safetensors"],
            Directory.GetFiles(Path.Combine(output, "transformer")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var expected = SafeTensors.Load(CheckpointManager.RoleWeightsPath(CheckpointManager.PathFor(f.BareRun, 1), "student"));
        using var model = WanTransformer3DModel.FromPretrained(output);
        AssertWeights(model, expected);
    }

    [Fact]
    public void EmaExportsTheShadowWeights()
    {
        var output = Out("ema");
        Assert.Equal(0, Export(f.EmaRun, "student", output, ema: true));
        var checkpoint = CheckpointManager.PathFor(f.EmaRun, 3);
        var live = SafeTensors.Load(CheckpointManager.RoleWeightsPath(checkpoint, "student"));
        const string prefix = "callbacks.ema.student_ema.";
        var shadows = SafeTensors.Load(Path.Combine(checkpoint, "training_state.safetensors"), keyFilter: k => k.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);
        Assert.Equal(live.Keys.Order(StringComparer.Ordinal), shadows.Keys.Order(StringComparer.Ordinal));

        using var model = WanTransformer3DModel.FromPretrained(output);
        AssertWeights(model, shadows);
        Assert.Contains(shadows, kv => !Same(kv.Value, live[kv.Key]));   // decay 0.5: the EMA lags the live weights
    }

    [Fact]
    public void GenerateRunsOnTheExport()
    {
        var output = Out("gen");
        Assert.Equal(0, Export(f.EmaRun, "student", output, ema: true));
        var prompt = Path.Combine(f.Root, $"prompt-{Guid.NewGuid():N}.safetensors");
        var latents = Path.Combine(f.Root, $"latents-{Guid.NewGuid():N}.safetensors");
        var result = Path.Combine(f.Root, $"result-{Guid.NewGuid():N}.safetensors");
        using (var g = new Generator(5, device("cpu")))
        {
            SafeTensors.Save(prompt, [new("prompt_embeds", randn([1, 6, 16], generator: g))]);
            SafeTensors.Save(latents, [new("latents", randn([1, 3, 2, 8, 8], generator: g))]);
        }
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Cli.Cli.Run(["generate", "--model", output, "--prompt-embeds", prompt, "--latents", latents, "--steps", "2",
            "--guidance-scale", "1", "--flow-shift", "3", "--output-latents", result], stdout, stderr);
        Assert.True(rc == 0, stderr.ToString() + stdout);
        var x = SafeTensors.Load(result)["latents"];
        Assert.Equal([1L, 3, 2, 8, 8], x.shape);
        Assert.True(x.isfinite().all().item<bool>());
    }

    [Fact]
    public void UnknownRoleListsTheRoles()
    {
        var e = Assert.Throws<UserError>(() => Export(f.EmaRun, "critic", Out("x")));
        Assert.Contains("no role 'critic'", e.Message);
        Assert.Contains("student (trainable)", e.Message);
        Assert.Contains("teacher (frozen", e.Message);
    }

    [Fact]
    public void FrozenRoleHasNoWeights()
    {
        var e = Assert.Throws<UserError>(() => Export(f.EmaRun, "teacher", Out("x")));
        Assert.Contains("role 'teacher' was frozen", e.Message);
        Assert.Contains("Exportable roles: student", e.Message);
    }

    [Fact]
    public void MissingRoleNamesTheExportableRoles()
    {
        var e = Assert.Throws<UserError>(() => Export(f.EmaRun, null, Out("x")));
        Assert.Contains("missing --role (exportable roles of this checkpoint: student)", e.Message);
    }

    [Fact]
    public void EmaNeedsEmaState()
    {
        var checkpoint = CheckpointManager.PathFor(f.PlainRun, 1);
        var e = Assert.Throws<UserError>(() => Export(f.PlainRun, "student", Out("x"), ema: true));
        Assert.Contains($"checkpoint '{checkpoint}' has no EMA state", e.Message);

        checkpoint = CheckpointManager.PathFor(f.LateEmaRun, 1);
        e = Assert.Throws<UserError>(() => Export(f.LateEmaRun, "student", Out("x"), ema: true));
        Assert.Contains($"EMA never started in checkpoint '{checkpoint}'", e.Message);
        Assert.Contains("start_iter 100", e.Message);

        e = Assert.Throws<UserError>(() => Export(f.EmaRun, "teacher", Out("x"), ema: true));
        Assert.Contains("frozen", e.Message);
    }

    [Fact]
    public void RefusesAnExistingNonEmptyOutUnlessOverwrite()
    {
        var output = Out("existing");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "stale.txt"), "old");
        var e = Assert.Throws<UserError>(() => Export(f.EmaRun, "student", output));
        Assert.Contains("exists and is not empty; pass --overwrite", e.Message);
        Assert.True(File.Exists(Path.Combine(output, "stale.txt")));

        Assert.Equal(0, Export(f.EmaRun, "student", output, overwrite: true));
        Assert.False(File.Exists(Path.Combine(output, "stale.txt")));
        using var model = WanTransformer3DModel.FromPretrained(output);

        // An existing empty folder is fine without --overwrite.
        var empty = Out("empty");
        Directory.CreateDirectory(empty);
        Assert.Equal(0, Export(f.EmaRun, "student", empty));
        Assert.True(File.Exists(Path.Combine(empty, "transformer", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public void RefusesAnOutInsideTheCheckpointOrBaseModel()
    {
        var e = Assert.Throws<UserError>(() => Export(f.EmaRun, "student", Path.Combine(f.Model, "exported")));
        Assert.Contains("overlaps the base model", e.Message);
        e = Assert.Throws<UserError>(() => Export(f.EmaRun, "student", f.EmaRun, overwrite: true));
        Assert.Contains("overlaps the checkpoint", e.Message);
    }

    [Fact]
    public void BadCheckpointPaths()
    {
        var e = Assert.Throws<UserError>(() => Export(Path.Combine(f.Root, "nope"), "student", Out("x")));
        Assert.Contains("does not exist", e.Message);
        e = Assert.Throws<UserError>(() => Export(f.Data, "student", Out("x")));
        Assert.Contains("neither a checkpoint-<step> folder nor a run folder", e.Message);
    }

    [Fact]
    public void AFailedExportLeavesNothingBehind()
    {
        var output = Out("failed");
        CheckpointExporter.BeforeRename = _ => throw new IOException("disk full (simulated)");
        try
        {
            Assert.Throws<IOException>(() => Export(f.EmaRun, "student", output));
        }
        finally { CheckpointExporter.BeforeRename = null; }
        Assert.False(Directory.Exists(output));
        Assert.Empty(Siblings(output));

        // With --overwrite, a failure keeps the previous export intact.
        Assert.Equal(0, Export(f.EmaRun, "student", output));
        var before = File.ReadAllBytes(Path.Combine(output, "transformer", "diffusion_pytorch_model.safetensors"));
        CheckpointExporter.BeforeRename = _ => throw new IOException("disk full (simulated)");
        try
        {
            Assert.Throws<IOException>(() => Export(f.EmaRun, "student", output, ema: true, overwrite: true));
        }
        finally { CheckpointExporter.BeforeRename = null; }
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(output, "transformer", "diffusion_pytorch_model.safetensors")));
        Assert.Equal([output], Siblings(output));
    }
}
