module MagnetWhisper.Tests.Segments.PositionsTests

// Filled in by the Positions work.
let internal pending = ()
