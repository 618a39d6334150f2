module MagnetWhisper.Tests.Segments.DownsampleTests

// Filled in by the Downsample work.
let internal pending = ()
