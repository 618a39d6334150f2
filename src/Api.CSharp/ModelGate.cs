using System;
using System.Threading;
using System.Threading.Tasks;

namespace MagnetWhisper
{
    /// <summary>
    /// One call at a time on a model's weights, and none after it is disposed. A MagnetWhisperModel shares its gate with
    /// the transcriber over it, so forward passes, encoding and generation queue behind a running transcription.
    /// </summary>
    sealed class ModelGate : IDisposable
    {
        readonly SemaphoreSlim semaphore = new(1, 1);
        readonly IDisposable? owned;
        readonly string ownerName;
        bool disposed;

        /// <param name="owned">What disposing the gate frees (the weights), after the running call.</param>
        /// <param name="ownerName">The public type named by <see cref="ObjectDisposedException"/>.</param>
        public ModelGate(IDisposable? owned, string ownerName)
        {
            this.owned = owned;
            this.ownerName = ownerName;
        }

        /// <summary>Runs <paramref name="call"/> alone on the model.</summary>
        public T Run<T>(Func<T> call)
        {
            Enter();
            try
            {
                return call();
            }
            finally
            {
                Exit();
            }
        }

        /// <summary>Runs <paramref name="call"/> alone on the model.</summary>
        public void Run(Action call) => Run(() => { call(); return 0; });

        /// <summary>Waits for the model; the caller must <see cref="Exit"/>.</summary>
        public void Enter()
        {
            semaphore.Wait();
            ThrowIfDisposedAndExit();
        }

        /// <summary>Waits for the model without blocking a thread; the caller must <see cref="Exit"/>.</summary>
        public async Task EnterAsync(CancellationToken cancellationToken)
        {
            await semaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
            ThrowIfDisposedAndExit();
        }

        /// <summary>Lets the next call in.</summary>
        public void Exit() => semaphore.Release();

        void ThrowIfDisposedAndExit()
        {
            if (!disposed) return;
            semaphore.Release();
            throw new ObjectDisposedException(ownerName);
        }

        /// <summary>Frees what the gate owns once the running call has finished; later calls throw <see cref="ObjectDisposedException"/>.</summary>
        public void Dispose()
        {
            semaphore.Wait();
            try
            {
                if (disposed) return;
                disposed = true;
                owned?.Dispose();
            }
            finally
            {
                semaphore.Release();
            }
        }
    }
}
