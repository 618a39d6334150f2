module MagnetWhisper.Tests.Segments.PoolingTests

// Filled in by the Pooling work.
let internal pending = ()
