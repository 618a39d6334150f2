module MagnetWhisper.Tests.Segments.LossesTests

// Filled in by the Losses work.
let internal pending = ()
