namespace MagnetWhisper.Core.Training

// GRPO's per-epoch objective (DECISIONS #4, issue 10): the PPO clipped surrogate of the ratio between the current
// policy and the sampling policy on the recorded actions, an optional KL penalty to the initial (reference) policy with
// the k3 estimator, and an entropy bonus. Every term is a mean over the K·B samples; the arithmetic is float64.

open TorchSharp
open MagnetWhisper.Core.Tensors

/// The objective's settings.
type ObjectiveSettings =
    { /// PPO's ε: the ratio is clipped to [1 − ε, 1 + ε]; None = no clipping (the original's effective objective).
      ClipEpsilon: float option
      /// β of the KL penalty to the reference policy (0 = none).
      KlCoefficient: float
      /// Weight of the entropy bonus (0 = none).
      EntropyCoefficient: float }

/// The objective of one inner epoch.
type ObjectiveTerms =
    { /// () the loss to minimise: PolicyLoss + β · KlToReference − c · Entropy (float64, differentiable).
      Loss: Tensor
      /// () −mean(min(ρ·A, clip(ρ)·A)) (float64, differentiable).
      PolicyLoss: Tensor
      /// () mean k3 estimate of KL(π ‖ π_ref); 0 without a reference (float64, differentiable).
      KlToReference: Tensor
      /// () mean entropy per sample (float64, differentiable).
      Entropy: Tensor
      /// Fraction of samples whose ratio lies outside [1 − ε, 1 + ε] (0 without clipping).
      ClipFraction: float
      /// mean((ρ − 1) − ln ρ): the k3 estimate of KL(π_old ‖ π) on the sampling policy's actions, ≥ 0.
      ApproxKl: float }

    /// Every tensor of the record.
    member t.Tensors = [ t.Loss; t.PolicyLoss; t.KlToReference; t.Entropy ]

/// The clipped objective and its parts.
[<RequireQualifiedAccess>]
module GrpoObjective =
    /// ρ = exp(ln π − ln π_old) (N), float64.
    let ratio (logProb: Tensor) (oldLogProb: Tensor) : Tensor =
        (logProb.to_type(torch.float64) - oldLogProb.detach().to_type(torch.float64)).exp()

    /// min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) per sample (N); ρ·A without ε.
    let surrogate (clipEpsilon: float option) (ratio: Tensor) (advantages: Tensor) : Tensor =
        let a = advantages.detach().to_type(torch.float64)
        match clipEpsilon with
        | Some eps -> torch.minimum(ratio * a, ratio.clamp((1.0 - eps).ToScalar(), (1.0 + eps).ToScalar()) * a)
        | None -> ratio * a

    /// The k3 estimator of KL(π ‖ π_ref) per sample: exp(ln π_ref − ln π) − (ln π_ref − ln π) − 1 (≥ 0).
    let k3 (logProb: Tensor) (referenceLogProb: Tensor) : Tensor =
        let d = referenceLogProb.detach().to_type(torch.float64) - logProb.to_type(torch.float64)
        d.exp() - d - 1.0

    /// The objective of one epoch. logProb (N) under the current weights (differentiable), oldLogProb (N) of the
    /// sampling pass, advantages (N), the reference policy's log-probabilities (N) when β > 0, entropy (N) per sample
    /// (differentiable).
    let terms (settings: ObjectiveSettings) (logProb: Tensor) (oldLogProb: Tensor) (advantages: Tensor) (referenceLogProb: Tensor option) (entropy: Tensor) : ObjectiveTerms =
        requireRank "logProb" 1 logProb
        for name, t in [ "oldLogProb", oldLogProb; "advantages", advantages; "entropy", entropy ] do
            requireRank name 1 t
            requireDim name 0 logProb.shape.[0] t
        match settings.ClipEpsilon with
        | Some e when not (e > 0.0) -> invalidArg "settings" $"ClipEpsilon must be positive, but is {e}"
        | _ -> ()
        use scope = torch.NewDisposeScope()
        let rho = ratio logProb oldLogProb
        let policyLoss = -(surrogate settings.ClipEpsilon rho advantages).mean()
        let kl =
            match referenceLogProb with
            | Some r when settings.KlCoefficient <> 0.0 -> (k3 logProb r).mean()
            | _ -> torch.zeros([||], dtype = torch.float64, device = logProb.device)
        let ent = entropy.to_type(torch.float64).mean()
        let loss = policyLoss + kl * settings.KlCoefficient - ent * settings.EntropyCoefficient
        let r = rho.detach()
        let clipFraction =
            match settings.ClipEpsilon with
            | Some eps -> toFloat ((r - 1.0).abs().gt(eps.ToScalar()).to_type(torch.float64).mean())
            | None -> 0.0
        let approxKl = toFloat ((r - 1.0 - r.log()).mean())
        let t =
            { Loss = loss; PolicyLoss = policyLoss; KlToReference = kl; Entropy = ent; ClipFraction = clipFraction
              ApproxKl = approxKl }
        keep scope t.Tensors
        t
