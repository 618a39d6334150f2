/// Placeholder: filled in by the Downsample work.
module MagnetWhisper.Core.Segments.Downsample

let internal pending = ()
