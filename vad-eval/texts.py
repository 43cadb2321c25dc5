"""English text for the evaluation: hand-written telephone phrases and a small
sentence grammar. Everything is chosen with a seeded random generator, so a
given (set name, seed) always yields the same text.

The tuning set and the test set use disjoint halves of the hand-written
phrases and different grammar seeds; the babble talkers get their own seed
too, so no sentence is shared between target speech and babble by design
(an accidental grammar collision is possible and harmless).
"""

import random

# Things people say on support lines, in voicemails and to voice bots.
PHRASES = [
    "Hello, I am calling about my last bill.",
    "Could you please repeat the confirmation number?",
    "My account number is four seven two nine one three.",
    "I would like to speak to someone in billing, please.",
    "Yes, that is correct.",
    "No, I did not order that.",
    "The package was supposed to arrive on Tuesday, but it never came.",
    "Can you hear me now? The line keeps cutting out.",
    "I will be at the office until six thirty this evening.",
    "Please call me back on my mobile when you get this message.",
    "Hi, it is Sarah from the dentist, just confirming your appointment.",
    "We have moved the meeting to Thursday at ten in the morning.",
    "I need to reset my password, but I cannot remember my security answer.",
    "Is this the right number for the pharmacy on Elm Street?",
    "The total comes to eighty four dollars and fifteen cents.",
    "Sorry, I think I pressed the wrong button.",
    "Could you spell that for me, please?",
    "It is the third house on the left after the bridge.",
    "The train was delayed by almost forty minutes this morning.",
    "I would like to cancel my subscription at the end of the month.",
    "Hold on a second, let me find a pen.",
    "Thank you so much for your help today.",
    "I have been waiting on hold for over twenty minutes.",
    "Your order number is seven seven three, zero one, nine five.",
    "The technician will arrive between noon and four o'clock.",
    "We noticed an unusual payment on your card yesterday.",
    "Press one if you recognise this transaction, or two if you do not.",
    "I am not sure, maybe you could check with my husband.",
    "The weather here has been awful all week.",
    "Tell her I will call again tomorrow after lunch.",
    "Could I get a table for four at half past seven?",
    "We are open from nine to five, Monday through Friday.",
    "Do you accept credit cards over the phone?",
    "The heating in my flat stopped working last night.",
    "I am calling to report a water leak in the basement.",
    "Can you transfer me to the claims department?",
    "My flight lands at eleven fifteen, so I will be a bit late.",
    "The code on the screen says error forty two.",
    "Just a moment, I am putting you on speaker.",
    "That sounds great, see you on Saturday then.",
    "I already sent the documents by email last Friday.",
    "Which address should I use for the delivery?",
    "We can offer you a refund or a replacement.",
    "The doctor can see you on Wednesday at two fifteen.",
    "Please have your policy number ready before you call.",
    "I think there is a mistake on my latest statement.",
    "Right, so you want the blue one and not the green one.",
    "Hang on, somebody is at the door.",
    "Can I pay the rest next month instead?",
    "The school called, they want you to pick up the kids early.",
    "Sorry, you are breaking up, I will call you back.",
    "My neighbour has been parking in front of my garage again.",
    "How long will the repair take, roughly?",
    "I would rather not give my date of birth over the phone.",
    "We will send you a text message with the tracking link.",
    "Is there anything else I can help you with today?",
    "Okay, thanks, bye.",
    "Good morning, you have reached the front desk.",
    "Let me check that for you, it will only take a minute.",
    "The internet has been very slow since the storm.",
]

SUBJECTS = [
    "the manager", "my brother", "our new neighbour", "the delivery driver",
    "a customer", "the engineer", "my landlord", "the nurse", "your sister",
    "the old man next door", "the bank", "the receptionist", "our team",
    "the company", "a friendly volunteer", "the taxi driver", "my daughter",
    "the insurance agent", "the caretaker", "the pilot",
]
VERBS = [
    "forgot", "repaired", "delivered", "cancelled", "found", "painted",
    "ordered", "checked", "moved", "borrowed", "returned", "cleaned",
    "signed", "posted", "counted", "opened", "locked", "replaced", "sold",
    "measured",
]
OBJECTS = [
    "the broken window", "three heavy boxes", "the monthly report",
    "a small parcel", "the front gate", "the kitchen sink", "my old bicycle",
    "the spare keys", "a long letter", "the garden fence", "the car battery",
    "two tickets", "the printer", "a bag of apples", "the wooden table",
    "the last invoice", "a new contract", "the washing machine",
    "the red folder", "the parking permit",
]
TIMES = [
    "yesterday afternoon", "last week", "this morning", "on Monday",
    "before the holidays", "after the meeting", "late last night",
    "at around nine", "two days ago", "earlier today", "in the spring",
    "just after lunch",
]
PLACES = [
    "at the station", "in the garage", "near the post office",
    "behind the supermarket", "at the hospital", "in the city centre",
    "on the second floor", "outside the school", "at the airport",
    "by the river",
]
CONNECTIVES = [
    "and then", "but", "because", "although", "so", "while",
]
OPENERS = [
    "", "", "", "well, ", "actually, ", "so, ", "apparently, ", "honestly, ",
    "you know, ", "to be fair, ",
]
QUESTION_STARTS = [
    "Do you know whether", "Did anyone tell you that", "Is it true that",
    "Can you confirm that", "Have you heard that",
]


def _clause(rng):
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(TIMES))
    if rng.random() < 0.4:
        parts.append(rng.choice(PLACES))
    return " ".join(parts)


def grammar_sentence(rng):
    """One generated sentence: statement, compound statement or question."""
    kind = rng.random()
    if kind < 0.45:
        s = rng.choice(OPENERS) + _clause(rng) + "."
    elif kind < 0.8:
        s = (rng.choice(OPENERS) + _clause(rng) + ", " + rng.choice(CONNECTIVES) + " "
             + _clause(rng) + ".")
    else:
        s = rng.choice(QUESTION_STARTS) + " " + _clause(rng) + "?"
    return s[0].upper() + s[1:]


def utterances(set_name, seed, count):
    """`count` utterances for the target talker of one set.

    About one in three is a hand-written phrase (tuning set: even indices,
    test set: odd indices), the rest come from the grammar; an utterance is
    one to three sentences long.
    """
    rng = random.Random(f"{set_name}-{seed}-text")
    own = PHRASES[0::2] if set_name == "tune" else PHRASES[1::2]
    out = []
    for _ in range(count):
        n = rng.choice([1, 1, 1, 2, 2, 3])
        sentences = []
        for _ in range(n):
            if rng.random() < 0.35:
                sentences.append(rng.choice(own))
            else:
                sentences.append(grammar_sentence(rng))
        out.append(" ".join(sentences))
    return out


def babble_text(set_name, seed, talker, sentences):
    """A long run of grammar sentences for one babble talker."""
    rng = random.Random(f"{set_name}-{seed}-babble-{talker}")
    return " ".join(grammar_sentence(rng) for _ in range(sentences))
