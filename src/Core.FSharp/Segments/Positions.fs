/// Placeholder: filled in by the Positions work.
module MagnetWhisper.Core.Segments.Positions

let internal pending = ()
