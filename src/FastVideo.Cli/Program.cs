using TorchSharp;
var x = torch.randn(4, 4);
Console.WriteLine((x.matmul(x)).sum().item<float>());
