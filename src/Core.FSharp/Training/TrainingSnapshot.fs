namespace MagnetWhisper.Core.Training

// Everything a resumed run needs to continue bit-identically on CPU (issue 9 §2), in memory: the model's parameters
// and buffers, AdamW's moments and step counts, every generator's state, the update number and the data position.
// TrainingCheckpoint writes it as a folder.

open System
open System.IO
open TorchSharp
open MagnetWhisper.Core

/// A copy of a training run's state between two updates. Dispose it to free the copied tensors.
type TrainingSnapshot =
    { /// Updates applied so far (the learning-rate schedule's step).
      Step: int
      /// Where the data stream continues (the trainer's count of consumed micro-batches or utterances).
      DataPosition: int64
      /// Copies of the model's parameters and buffers, by name.
      State: (string * torch.Tensor) list
      /// AdamW's state as TorchSharp's `save_state_dict` writes it (per group: learning rates and hyper-parameters;
      /// per parameter: step, first and second moments).
      Optimizer: byte[]
      /// The generators' states.
      Random: RandomState }

    interface IDisposable with
        member s.Dispose() =
            for _, t in s.State do
                t.Dispose()

/// Capturing and restoring training state.
[<RequireQualifiedAccess>]
module TrainingSnapshot =
    /// AdamW's state as bytes (TorchSharp's format).
    let optimizerBytes (optimizer: TrainingOptimizer) : byte[] =
        use stream = new MemoryStream()
        do
            use writer = new BinaryWriter(stream, Text.Encoding.UTF8, true)
            optimizer.AdamW.save_state_dict writer
        stream.ToArray()

    /// Loads AdamW's state from bytes written by optimizerBytes for an optimizer of the same groups and parameters.
    let loadOptimizer (optimizer: TrainingOptimizer) (bytes: byte[]) =
        use stream = new MemoryStream(bytes)
        use reader = new BinaryReader(stream)
        optimizer.AdamW.load_state_dict reader

    /// Copies the state (a model's `State`: parameters then buffers), the optimizer and the generators.
    let capture (step: int) (dataPosition: int64) (state: (string * torch.Tensor) list) (optimizer: TrainingOptimizer) (generators: (string * torch.Generator) list) : TrainingSnapshot =
        use _ = torch.no_grad ()
        { Step = step
          DataPosition = dataPosition
          State = [ for n, t in state -> n, t.detach().clone().DetachFromDisposeScope() ]
          Optimizer = optimizerBytes optimizer
          Random = RandomState.capture generators }

    /// Copies a snapshot into a model's state (same names and shapes), the optimizer (built the same way over that
    /// model) and the generators. Raises naming a tensor that is missing or has another shape.
    let restore (snapshot: TrainingSnapshot) (state: (string * torch.Tensor) list) (optimizer: TrainingOptimizer) (generators: (string * torch.Generator) list) =
        let saved = dict snapshot.State
        use _ = torch.no_grad ()
        for n, t in state do
            match saved.TryGetValue n with
            | true, s when s.shape = t.shape -> t.copy_(s) |> ignore
            | true, s -> invalidArg "snapshot" $"the snapshot's '{n}' has shape {Tensors.showShape s.shape} but the model's has {Tensors.showShape t.shape}"
            | _ -> invalidArg "snapshot" $"the snapshot has no tensor '{n}'"
        loadOptimizer optimizer snapshot.Optimizer
        RandomState.restore snapshot.Random generators
