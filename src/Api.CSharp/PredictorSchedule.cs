using System;
using Mg = MagnetWhisper.Core.Magnet;

namespace MagnetWhisper
{
    /// <summary>
    /// What a trainer sets for one boundary predictor before a forward pass (the core's <c>Schedule</c>). Every value left
    /// null keeps the predictor's own: its configured temperature, schedules 1, boundary-loss weight 0, and the input's
    /// <see cref="MagnetForwardInput.TargetProgress"/>. Give it per encoder layer in <see cref="MagnetForwardInput.Schedules"/>.
    /// <code>
    /// var input = new MagnetForwardInput(mel, labels)
    /// {
    ///     Seed = 3, Targets = counts,
    ///     Schedules = new Dictionary&lt;int, PredictorSchedule&gt; { [3] = new PredictorSchedule { CompressionSchedule = 0.5 } },
    /// };
    /// </code>
    /// </summary>
    public sealed class PredictorSchedule
    {
        /// <summary>Gumbel-sigmoid temperature τ &gt; 0 of the relaxed sample; null = the predictor's configured temperature.</summary>
        public double? Temperature { get; init; }

        /// <summary>BP1/BP4 target schedule in [0, 1]: 0 makes every frame a boundary, 1 uses the targets; null = 1.</summary>
        public double? CompressionSchedule { get; init; }

        /// <summary>Prior schedule in [0, 1]: the prior used is p / (p + s·(1 − p)) (BP3 without targets, RL mode); null = 1.</summary>
        public double? PriorSchedule { get; init; }

        /// <summary>Weight of BP3's prior-scheduled loss when it has no targets; null = 0.</summary>
        public double? BoundaryLossWeight { get; init; }

        /// <summary>
        /// Target-progress lerp in [0, 1] of this predictor's targets: 0 makes every frame a boundary, 1 uses the targets;
        /// null = the input's <see cref="MagnetForwardInput.TargetProgress"/>.
        /// </summary>
        public double? TargetProgress { get; init; }

        /// <summary>The core schedule: the given values over <paramref name="own"/>; errors name the layer.</summary>
        internal Mg.Schedule Over(Mg.Schedule own, int layer)
        {
            static double InUnit(double? value, double fallback, string name, int layer) =>
                value switch
                {
                    null => fallback,
                    double v when v is >= 0.0 and <= 1.0 => v,
                    double v => throw new ArgumentOutOfRangeException(name, v, $"Schedules[{layer}].{name} must be in [0, 1], but is {v}."),
                };
            if (Temperature is double t && !(t > 0.0))
                throw new ArgumentOutOfRangeException(nameof(Temperature), t, $"Schedules[{layer}].Temperature must be positive, but is {t}.");
            if (BoundaryLossWeight is double w && (w < 0.0 || double.IsNaN(w)))
                throw new ArgumentOutOfRangeException(nameof(BoundaryLossWeight), w, $"Schedules[{layer}].BoundaryLossWeight must be at least 0, but is {w}.");
            // Named arguments: a reordered or renamed core field is a compile error here, not a silent swap.
            return new Mg.Schedule(
                temperature: Temperature ?? own.Temperature,
                compressionSchedule: InUnit(CompressionSchedule, own.CompressionSchedule, nameof(CompressionSchedule), layer),
                priorSchedule: InUnit(PriorSchedule, own.PriorSchedule, nameof(PriorSchedule), layer),
                boundaryLossWeight: BoundaryLossWeight ?? own.BoundaryLossWeight,
                targetProgress: InUnit(TargetProgress, own.TargetProgress, nameof(TargetProgress), layer));
        }
    }
}
