/// Placeholder: filled in by the Losses work.
module MagnetWhisper.Core.Segments.Losses

let internal pending = ()
