using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// The <c>wan</c> family: Wan 2.1 text-to-video from a Diffusers folder. One instance per role; owns its
/// <see cref="WanTransformer3DModel"/> and a <see cref="FlowMatchEulerDiscreteScheduler"/> with the role's shift.
/// </summary>
public partial class WanModel : FlowMatchModel<WanTransformerBase>
{
    public static ModelFamily Family { get; } = new(
        Name: "wan",
        Description: "Wan 2.1 text-to-video (Diffusers WanTransformer3DModel), bidirectional attention",
        RoleConfigType: typeof(RoleConfig),
        LatentSpace: "wan-vae",
        Defaults: new FamilyDefaults(FlowShift: 3.0, TextLen: 512, Vae: VaeConfig.WanDefault),
        Create: ctx => new WanModel(ctx))
    {
        DataParallelDraws = true,
        EstimateActivations = q => WanActivations.Estimate(q),
        ClassPaths = ["fastvideo.train.models.wan.WanModel", "fastvideo.train.models.wan.wan.WanModel"],
        TransformerClass = "WanTransformer3DModel",
        StreamingFamily = "wan_causal",
        WriteRandomTransformer = (config, seed, dir) =>
        {
            using var m = WanTransformer3DModel.CreateRandom(WanTransformerConfig.FromJson(config, "random transformer config"), seed);
            m.SavePretrained(dir);
        },
        // The LoraLinear layers of WanTransformer3DModel: upstream's Wan minus its excluded "embedder" layers.
        IsLoraCapable = name => LoraCapableLayer().IsMatch(name),
    };

    [System.Text.RegularExpressions.GeneratedRegex(@"^(blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2))|proj_out)$")]
    private static partial System.Text.RegularExpressions.Regex LoraCapableLayer();

    public WanModel(ModelBuildContext context) : this(context, WanTransformer3DModel.FromWeights) { }

    /// <summary>
    /// A Wan plugin whose transformer <paramref name="load"/> builds from (config, weights, their source, master dtype):
    /// how <c>wan_causal</c> puts its causal transformer in the same plugin.
    /// </summary>
    protected WanModel(ModelBuildContext context, Func<WanTransformerConfig, WeightSet, string, ScalarType, WanTransformerBase> load)
        : base(context, (json, path, weights, source, dtype) => load(WanTransformerConfig.FromJson(json, path), weights, source, dtype))
    {
    }

    public WanTransformerBase WanTransformer => DiT;

    /// <summary>The text channel (tokens and mask) of FastVideo's T2V data.</summary>
    protected override Conditioning ConditionalChannels(Conditioning raw, ScalarType dtype)
    {
        var text = raw[Conditioning.Text];
        return Conditioning.FromText(text.Values.to(Device).to_type(dtype),
            (text.Mask ?? ones(text.Values.shape[0], text.Values.shape[1])).to(Device).to_type(dtype));
    }

    /// <summary>The Wan DiT takes the text tokens only (it ignores the mask, as upstream and Diffusers).</summary>
    protected override Tensor RunTransformer(Tensor hiddenStates, Tensor timestep, Conditioning conditioning) =>
        DiT.Forward(hiddenStates, timestep, conditioning[Conditioning.Text].Values);
}
