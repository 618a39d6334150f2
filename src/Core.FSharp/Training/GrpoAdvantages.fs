namespace MagnetWhisper.Core.Training

// GRPO's advantages (DECISIONS #4, issue 10): the K samples of one audio form a group; each sample's advantage is its
// reward relative to its group. The project normalises within each group (mean and standard deviation of the group);
// a group whose rewards do not differ carries no information and gets zero advantage (counted). The original
// (SPEC §8.2 steps 5–6) subtracted the group mean, then normalised over the whole batch.

open System
open TorchSharp
open MagnetWhisper.Core.Tensors

/// How advantages are normalised.
type AdvantageNormalisation =
    /// The project's default: A = (r − mean_group) / (std_group + ε); a zero-spread group gets A = 0.
    | PerGroup
    /// The original (SPEC §8.2 steps 5–6): A = r − mean_group, then (A − mean(A)) / (std(A) + ε) over all K·B
    /// entries. Zero-spread groups are still counted, but their advantage is whatever the global step makes of it.
    | GlobalAfterGroupMean
    /// The group mean is subtracted, nothing else (plain REINFORCE with a group-mean baseline).
    | GroupMeanOnly

/// Advantages of a batch of groups and the count of groups whose rewards did not differ.
type GroupAdvantages =
    { /// (K·B) float64 advantages in the rewards' layout.
      Advantages: Tensor
      /// Groups whose rewards have zero spread (standard deviation ≤ ZeroSpreadTolerance).
      ZeroSpreadGroups: int
      /// B, the number of groups.
      Groups: int }

    /// ZeroSpreadGroups / Groups.
    member a.ZeroSpreadFraction = float a.ZeroSpreadGroups / float a.Groups

    interface IDisposable with
        member a.Dispose() = a.Advantages.Dispose()

/// Group-relative advantages.
[<RequireQualifiedAccess>]
module GrpoAdvantages =
    /// The ε of the normalisations (the original's 1e-8).
    [<Literal>]
    let Epsilon = 1e-8

    /// A group whose rewards' standard deviation is at most this is "zero-spread": its rewards differ only by
    /// floating-point noise (float32 cross-entropies of identical pooled inputs differ by ~1e-7), which a division by
    /// the standard deviation would blow up into ±1 advantages (the original's defect, SPEC §8.2 "effective status").
    [<Literal>]
    let ZeroSpreadTolerance = 1e-6

    /// The rewards of K·B samples laid out K-major (sample k of audio b at row k·B + b, as `GrpoBatch.tile` builds
    /// them) as a (B, K) float64 matrix: row b is audio b's group.
    let groups (k: int) (rewards: Tensor) : Tensor =
        requireRank "rewards" 1 rewards
        if k < 1 then invalidArg "k" $"the group size must be at least 1, but is {k}"
        let n = rewards.shape.[0]
        if n % int64 k <> 0L then invalidArg "rewards" $"{n} rewards do not split into groups of {k}"
        rewards.detach().to_type(torch.float64).reshape(int64 k, n / int64 k).t()

    /// The (B, K) matrix back in the K-major layout (K·B).
    let ungroup (grouped: Tensor) : Tensor = grouped.t().reshape(-1L)

    /// The advantages of rewards (K·B, K-major) in groups of k. A group of one sample has zero spread.
    let compute (normalisation: AdvantageNormalisation) (k: int) (rewards: Tensor) : GroupAdvantages =
        use scope = torch.NewDisposeScope()
        let r = groups k rewards
        let b = int r.shape.[0]
        let mean = r.mean([| 1L |], keepdim = true)
        let centred = r - mean
        let std =
            if k > 1 then r.std(1L, unbiased = true, keepdim = true)
            else torch.zeros_like mean
        let zeroSpread = std.le((ZeroSpreadTolerance).ToScalar())
        let zeroSpreadGroups = int (zeroSpread.sum().item<int64>())
        let grouped =
            match normalisation with
            | PerGroup -> torch.where(zeroSpread, torch.zeros_like centred, centred / (std + Epsilon))
            | GroupMeanOnly -> centred
            | GlobalAfterGroupMean ->
                let all = centred.reshape(-1L)
                let s = if all.shape.[0] > 1L then all.std(unbiased = true) else torch.zeros([||], dtype = torch.float64)
                (centred - all.mean()) / (s + Epsilon)
        let advantages = (ungroup grouped).contiguous()
        keep scope [ advantages ]
        { Advantages = advantages; ZeroSpreadGroups = zeroSpreadGroups; Groups = b }

    /// The normalisation's name in configurations.
    let name (n: AdvantageNormalisation) : string =
        match n with
        | PerGroup -> "group"
        | GlobalAfterGroupMean -> "global"
        | GroupMeanOnly -> "none"

    /// The normalisation of a name (case-insensitive). Raises naming the value and the choices.
    let parse (text: string) : AdvantageNormalisation =
        match text.Trim().ToLowerInvariant() with
        | "group" -> PerGroup
        | "global" -> GlobalAfterGroupMean
        | "none" -> GroupMeanOnly
        | _ -> invalidArg "text" $"'{text}' names no advantage normalisation; choose one of: group, global, none"
