/// FsCheck generators shared by the property tests, passed by config (never registered globally).
module MagnetWhisper.Tests.Generators

open Expecto
open FsCheck
open FsCheck.FSharp

/// Property-test configuration: a fixed replay-able seed per run is printed by Expecto on failure.
let config = { FsCheckConfig.defaultConfig with maxTest = 60 }

/// Config with extra arbitraries.
let configWith (types: System.Type list) = { config with arbitrary = types @ config.arbitrary }

/// A property over the given config.
let prop name (f: 'a -> unit) = testPropertyWithConfig config name f
