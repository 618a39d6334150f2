/// Placeholder: filled in by the Pooling work.
module MagnetWhisper.Core.Segments.Pooling

let internal pending = ()
