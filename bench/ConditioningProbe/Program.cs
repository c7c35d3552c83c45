// For each noise level sigma: noise real quickstart clips, let the model predict x0 once with the clip's own caption
// and once with the opposite direction in the caption, and count how often the evaluator reads the clip's true
// direction from each prediction. A model that uses the direction word scores higher with the true caption wherever
// the noisy clip alone does not settle the direction; equal counts mean the word is ignored. The last column is the
// x0 error in normalised units; scripts/direction_gap_bayes.py gives the ideal denoiser's, with and without the direction.
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Models.Vae;
using FastVideo.Train.Quickstart;
using static TorchSharp.torch;

if (args.Length < 1) { Console.Error.WriteLine("usage: ConditioningProbe MODEL_DIR [SIGMA ...]"); return 2; }
var sigmas = args.Length > 1 ? args.Skip(1).Select(double.Parse).ToArray() : [0.99, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8];
using var model = WanTransformer3DModel.FromPretrained(args[0]);
var vae = VaeConfig.Load(Path.Combine(args[0], "vae", "config.json"));
var o = QuickstartRunner.Data;
var encoder = new SyntheticTextEncoder(o.EmbedDim, o.Seed);
var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
var directions = o.PaletteDirections.ToList();
Tensor Embed(string p) { using var e = encoder.Encode(p); return nn.functional.pad(e, [0, 0, 0, o.TextLen - e.shape[0]]).unsqueeze(0); }

using var g = new Generator(5, device("cpu"));
using var _ = no_grad();
Console.WriteLine("| sigma | direction read from x0-pred, true caption | same, opposite direction in caption | mean abs change of x0-pred | x0 MSE (normalised), true caption |");
Console.WriteLine("|---|---|---|---|---|");
foreach (var sigma in sigmas)
{
    int ok = 0, okSwapped = 0, n = 0;
    double change = 0, mse = 0;
    foreach (var cls in SyntheticVideoDataset.Classes(o))
        for (int k = 0; k < 4; k++)
        {
            using var scope = NewDisposeScope();
            var x0 = vae.Normalize(SyntheticVideoDataset.RenderClip(o, cls, k).ToTensor().unsqueeze(0));
            var xt = (1 - sigma) * x0 + sigma * randn(x0.shape, generator: g);
            var t = tensor(new[] { (float)(sigma * 1000) });
            var opposite = directions[directions.IndexOf(cls.Direction) ^ 1]; // left<->right, up<->down
            var x0Pred = xt - sigma * model.Forward(xt, t, Embed(cls.Prompt));
            mse += (x0Pred - x0).square().mean().item<float>();
            var predTrue = vae.Denormalize(x0Pred)[0];
            var predSwapped = vae.Denormalize(xt - sigma * model.Forward(xt, t, Embed(SyntheticPalette.Prompt(cls.Color, opposite, o.Shape))))[0];
            ok += evaluator.Evaluate(predTrue, cls.Prompt).DirectionCorrect ? 1 : 0;
            okSwapped += evaluator.Evaluate(predSwapped, cls.Prompt).DirectionCorrect ? 1 : 0;
            change += (predTrue - predSwapped).abs().mean().item<float>();
            n++;
        }
    Console.WriteLine($"| {sigma} | {ok}/{n} | {okSwapped}/{n} | {change / n:F4} | {mse / n:F4} |");
}
return 0;
