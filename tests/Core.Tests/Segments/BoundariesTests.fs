module MagnetWhisper.Tests.Segments.BoundariesTests

// Filled in by the Boundaries work.
let internal pending = ()
