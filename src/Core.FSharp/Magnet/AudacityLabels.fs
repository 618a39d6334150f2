/// The Audacity label file of the original's visualize_boundaries.py (SPEC §9.2): one point label a boundary,
/// `t<TAB>t<TAB>boundary_k`, at the true end time of the boundary's position (frame or pooled segment). The original
/// computed t = (rank + 1)·duration / n_valid, which is wrong as soon as positions are padded, strided differently
/// or pooled by an earlier predictor.
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Magnet.AudacityLabels

open System
open System.Globalization
open MagnetWhisper.Core

/// One Audacity label: start and end in seconds (equal for a point label) and its text.
type Label =
    { Start: float
      End: float
      Text: string }

/// The labels of a trace: `boundary_k` (k from 0) for the boundaries of a single predictor; with several,
/// `layerL_boundary_k` for the predictor before encoder layer L, predictor after predictor.
let ofTrace (trace: BoundaryTrace) : Label list =
    let prefix (p: PredictorTrace) = if trace.Predictors.Length > 1 then $"layer{p.Layer}_" else ""
    [ for p in trace.Predictors do
          for k, t in Array.indexed p.BoundaryTimes -> { Start = t; End = t; Text = $"{prefix p}boundary_{k}" } ]

/// The text of a label file: `start<TAB>end<TAB>text` a line, seconds with 6 decimals (Audacity's own precision).
let format (labels: Label list) : string =
    let seconds (t: float) = t.ToString("F6", CultureInfo.InvariantCulture)
    String.Join("", labels |> List.map (fun l -> $"{seconds l.Start}\t{seconds l.End}\t{l.Text}\n"))

/// Writes the label file of a trace (atomically).
let write (path: string) (trace: BoundaryTrace) : unit = AtomicWrite.text path (format (ofTrace trace))
