namespace MagnetWhisper.Core.Training

// Every random generator a training step draws from, captured and restored, so a resumed step draws exactly what the
// uninterrupted run would have drawn (issue 9 §2). The generators: the boundary-sampling generator passed in
// `PredictorMode.Sample` (Gumbel noise and the predictors' dropout while sampling), any other named generator of the
// trainer (e.g. the data shuffle), and TorchSharp's global CPU generator (the Transformer's dropout, and the
// predictors' dropout when no sampling generator is given).

open System
open TorchSharp

/// The states of a trainer's generators (torch's `get_state()` bytes).
type RandomState =
    { /// torch's global CPU generator (`torch.random.get_rng_state`).
      Global: byte[]
      /// The named generators of the trainer.
      Generators: (string * byte[]) list }

/// Capturing and restoring generator states.
[<RequireQualifiedAccess>]
module RandomState =
    let private bytesOf (state: torch.Tensor) : byte[] =
        use s = state
        s.cpu().contiguous().bytes.ToArray()

    let private tensorOf (bytes: byte[]) : torch.Tensor = torch.tensor(bytes, dtype = torch.uint8)

    /// The current states of the global generator and of the named generators.
    let capture (generators: (string * torch.Generator) list) : RandomState =
        { Global = bytesOf (torch.random.get_rng_state ())
          Generators = [ for name, g in generators -> name, bytesOf (g.get_state ()) ] }

    /// Puts the captured states back into the global generator and the named generators. Raises when a generator has
    /// no captured state, naming it.
    let restore (state: RandomState) (generators: (string * torch.Generator) list) =
        let saved = dict state.Generators
        for name, g in generators do
            match saved.TryGetValue name with
            | true, bytes ->
                use t = tensorOf bytes
                g.set_state t
            | _ ->
                let known = String.Join(", ", state.Generators |> List.map fst)
                invalidArg "generators" $"the saved random state has no generator '{name}' (it has: {known})"
        use t = tensorOf state.Global
        torch.random.set_rng_state t
