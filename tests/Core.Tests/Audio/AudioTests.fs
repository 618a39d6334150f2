/// The "audio" test list: .npy, WAV, FLAC, resampling, log-mel features, loading.
module MagnetWhisper.Tests.Audio.AudioTests

open Expecto

[<Tests>]
let tests =
    testSequenced
    <| testList "audio" [ NpyTests.tests; WavTests.tests; FlacTests.tests; ResampleTests.tests; FfmpegResampleTests.tests; LogMelTests.tests; LoadTests.tests ]
