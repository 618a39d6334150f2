/// Placeholder: filled in by the Boundaries work.
module MagnetWhisper.Core.Segments.Boundaries

let internal pending = ()
