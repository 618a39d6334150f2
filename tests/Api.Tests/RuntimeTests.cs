using MagnetWhisper.Diagnostics;
using TorchSharp;
using Xunit;

namespace MagnetWhisper.Api.Tests;

public class RuntimeTests
{
    [Fact]
    public void TensorsComputeInThisProcess()
    {
        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var b = a.matmul(a.t());
        Assert.Equal(5f, b[0, 0].item<float>());
        Assert.Equal(50f, b[1, 1].item<float>());
    }

    [Fact]
    public void RuntimeReportSaysUsable()
    {
        var report = RuntimeReport.Collect();
        Assert.True(report.Usable, report.LoadError);
        Assert.False(string.IsNullOrEmpty(report.LibTorchVersion));
    }
}
