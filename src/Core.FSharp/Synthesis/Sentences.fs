/// The sentences of the synthetic corpus: a small grammar (commands, numbers, times, short statements) drawn with
/// a seeded SplitMix64, numbers and times spelled out in words (as a speaker says them, so that Whisper's English
/// normaliser maps the reference and a transcript written in digits alike), lower case without punctuation.
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Synthesis.Sentences

open System
open System.Text
open MagnetWhisper.Core.Data

/// The sentence splits: which part of the corpus a sentence may appear in. Every sentence belongs to exactly one.
type SentenceSplit =
    | Train
    | Dev
    | Test

let private ones =
    [| "zero"; "one"; "two"; "three"; "four"; "five"; "six"; "seven"; "eight"; "nine"; "ten"; "eleven"; "twelve"
       "thirteen"; "fourteen"; "fifteen"; "sixteen"; "seventeen"; "eighteen"; "nineteen" |]

let private tens = [| ""; ""; "twenty"; "thirty"; "forty"; "fifty"; "sixty"; "seventy"; "eighty"; "ninety" |]

/// 0–99 in words: "seven", "nineteen", "forty", "forty five" (no hyphen: the normaliser treats both alike, and a
/// hyphen is punctuation in the transcript).
let spell (n: int) : string =
    if n < 0 || n > 99 then invalidArg (nameof n) $"spells 0 to 99, got {n}"
    elif n < 20 then ones.[n]
    elif n % 10 = 0 then tens.[n / 10]
    else $"{tens.[n / 10]} {ones.[n % 10]}"

let private rooms = [| "kitchen"; "bedroom"; "living room"; "bathroom"; "hallway"; "garage"; "office"; "garden" |]
let private names = [| "anna"; "peter"; "maria"; "john"; "sarah"; "david"; "emma"; "thomas"; "laura"; "michael" |]
let private colours = [| "red"; "blue"; "green"; "yellow"; "white"; "black"; "grey"; "orange" |]
let private vehicles = [| "train"; "bus"; "ferry"; "plane"; "coach"; "tram" |]
let private things = [| "apples"; "books"; "chairs"; "boxes"; "letters"; "bottles"; "cups"; "pencils" |]
let private places = [| "table"; "shelf"; "floor"; "desk"; "counter"; "bench" |]
let private cities = [| "london"; "paris"; "berlin"; "madrid"; "rome"; "dublin"; "vienna"; "oslo" |]
let private weathers = [| "sunny"; "cold"; "warm"; "windy"; "cloudy"; "raining"; "snowing" |]
let private devices = [| "heating"; "oven"; "fridge"; "air conditioning"; "thermostat" |]
let private tasks = [| "buy milk"; "call the doctor"; "water the plants"; "feed the cat"; "pay the rent"; "take the bins out" |]
let private genres = [| "jazz"; "classical"; "rock"; "folk"; "piano"; "country" |]
let private partsOfDay = [| "morning"; "afternoon"; "evening" |]
let private units = [| "minutes"; "seconds" |]
let private switches = [| "on"; "off" |]
let private days = [| "monday"; "tuesday"; "wednesday"; "thursday"; "friday"; "saturday"; "sunday" |]

let private pick (rng: SplitMix64) (words: string[]) = words.[rng.Below words.Length]

/// 2–99 in words (a count that takes a plural noun).
let private count (rng: SplitMix64) = spell (2 + rng.Below 98)

/// A clock time in words: "seven thirty", "half past nine", "a quarter to eleven", "six in the evening".
let private time (rng: SplitMix64) =
    let hour = spell (1 + rng.Below 12)
    match rng.Below 6 with
    | 0 -> $"{hour} thirty"
    | 1 -> $"{hour} fifteen"
    | 2 -> $"{hour} forty five"
    | 3 -> $"half past {hour}"
    | 4 -> $"a quarter to {hour}"
    | _ -> $"{hour} in the {pick rng partsOfDay}"

/// One sentence drawn from the grammar.
let draw (rng: SplitMix64) : string =
    match rng.Below 14 with
    | 0 -> $"set a timer for {count rng} {pick rng units}"
    | 1 -> $"turn {pick rng switches} the {pick rng rooms} lights"
    | 2 -> $"call {pick rng names} at {time rng}"
    | 3 -> $"wake me up at {time rng} on {pick rng days}"
    | 4 -> $"play some {pick rng genres} music in the {pick rng rooms}"
    | 5 -> $"set the {pick rng devices} to {count rng} degrees"
    | 6 -> $"remind me to {pick rng tasks} at {time rng}"
    | 7 -> $"the {pick rng colours} {pick rng vehicles} leaves at {time rng}"
    | 8 -> $"there are {count rng} {pick rng things} on the {pick rng places}"
    | 9 -> $"{pick rng names} bought {count rng} {pick rng things} on {pick rng days}"
    | 10 -> $"it is {pick rng weathers} in {pick rng cities} today"
    | 11 -> $"my number is {spell (rng.Below 10)} {spell (rng.Below 10)} {spell (rng.Below 10)} {spell (rng.Below 10)}"
    | 12 -> $"the meeting with {pick rng names} moved to {time rng}"
    | _ -> $"{pick rng names} has lived in {pick rng cities} for {count rng} years"

/// FNV-1a over the UTF-8 bytes: a specified hash of a sentence (String.GetHashCode differs per process).
let private fnv1a (text: string) : uint64 =
    let mutable h = 0xCBF29CE484222325UL
    for b in Encoding.UTF8.GetBytes text do
        h <- (h ^^^ uint64 b) * 0x100000001B3UL
    h

/// The split a sentence belongs to under a seed, by its text alone (8 in 10 train, 1 dev, 1 test), so the
/// splits never share a sentence however many utterances are drawn.
let splitOf (seed: int64) (sentence: string) : SentenceSplit =
    match SplitMix64.Mix(fnv1a sentence ^^^ SplitMix64.Mix(uint64 seed)) % 10UL with
    | 8UL -> Dev
    | 9UL -> Test
    | _ -> Train

/// The generator of utterance `index`'s draws of one kind (`stream`: 0 sentences, 1 voices) under a seed: a
/// function of the three alone, so utterance i is the same whatever else is drawn or how many workers draw.
let generator (seed: int64) (stream: int) (index: int) : SplitMix64 =
    SplitMix64(SplitMix64.Mix(SplitMix64.Mix(SplitMix64.Mix(uint64 seed) + uint64 stream) + uint64 index))

/// The sentence of utterance `index`: the first draw of its generator that belongs to `split`.
let sentenceFor (seed: int64) (index: int) (split: SentenceSplit) : string =
    let rng = generator seed 0 index
    let rec next () =
        let s = draw rng
        if splitOf seed s = split then s else next ()
    next ()
